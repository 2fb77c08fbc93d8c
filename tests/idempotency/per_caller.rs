//! Private per caller: keys are kept per [`Caller`] unless the layer is
//! told otherwise, and a replay never hands out the session of the caller
//! who ran the request.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::IdempotencyLayer;
use palisade::key::{Caller, ClientIp, KeyExtractor};

use crate::common::{Handler, Req, harness, post, post_as, send};

const KEY: &str = "8e03978e-40d5-43e8-bc93-6894a57f9324";

/// Answers with a session cookie and a body naming the caller it ran for
/// (its `x-api-key`, else its `authorization`, else its peer).
fn with_session() -> Handler {
    Arc::new(|req: Req, n| {
        let who = ["x-api-key", "authorization"]
            .iter()
            .find_map(|h| req.headers().get(*h)?.to_str().ok().map(str::to_owned))
            .or_else(|| {
                req.extensions()
                    .get::<SocketAddr>()
                    .map(|a| a.ip().to_string())
            })
            .unwrap_or_default();
        Box::pin(async move {
            Response::builder()
                .status(StatusCode::CREATED)
                .header("set-cookie", format!("session={who}; HttpOnly"))
                .header("set-cookie", "csrf=t0k3n")
                .header("x-call", n.to_string())
                .body(Full::new(Bytes::from(format!("paid for {who}"))))
                .unwrap()
        })
    })
}

fn from_peer(peer: &str) -> Req {
    let mut req = post(Some(KEY), "{}");
    req.headers_mut().remove("x-api-key");
    req.extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    req
}

#[tokio::test]
async fn another_caller_with_the_same_key_and_body_never_gets_the_response() {
    let (app, count) = harness(IdempotencyLayer::new(), with_session());
    let alice = send(&app, post_as("k-alice", Some(KEY), "{}")).await;
    let bob = send(&app, post_as("k-bob", Some(KEY), "{}")).await;
    assert_eq!(count.get(), 2, "each caller runs once, in its own scope");
    assert!(
        !bob.replayed(),
        "bob's request ran; it is not alice's replay"
    );
    assert_eq!(bob.body, "paid for k-bob");

    let alice_again = send(&app, post_as("k-alice", Some(KEY), "{}")).await;
    let bob_again = send(&app, post_as("k-bob", Some(KEY), "{}")).await;
    assert_eq!(count.get(), 2, "each retry replays");
    assert!(alice_again.replayed() && bob_again.replayed());
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(bob_again.body, "paid for k-bob");
    assert_eq!(alice_again.headers["x-call"], "0");
    assert_eq!(bob_again.headers["x-call"], "1");
    for replay in [&alice_again, &bob_again] {
        assert!(
            !replay.headers.contains_key(SET_COOKIE),
            "no cookie replayed"
        );
    }
}

#[tokio::test]
async fn bearer_tokens_and_client_addresses_are_callers_too() {
    let (app, count) = harness(IdempotencyLayer::new(), with_session());
    let bearer = |token: &str| {
        let mut req = post(Some(KEY), "{}");
        req.headers_mut().remove("x-api-key");
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    send(&app, bearer("t-1")).await;
    let other = send(&app, bearer("t-2")).await;
    assert!(!other.replayed());
    assert!(send(&app, bearer("t-1")).await.replayed());
    assert_eq!(count.get(), 2);

    send(&app, from_peer("192.0.2.1:5000")).await;
    let neighbour = send(&app, from_peer("192.0.2.2:5000")).await;
    assert!(!neighbour.replayed());
    assert_eq!(neighbour.body, "paid for 192.0.2.2");
    assert!(send(&app, from_peer("192.0.2.1:6000")).await.replayed());
    assert_eq!(count.get(), 4);
}

#[tokio::test]
async fn a_request_without_any_caller_identity_is_refused() {
    let (app, count) = harness(IdempotencyLayer::new(), with_session());
    let mut anonymous = post(Some(KEY), "{}");
    anonymous.headers_mut().remove("x-api-key");
    let refused = send(&app, anonymous).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(count.get(), 0);
}

#[tokio::test]
async fn per_global_is_an_explicit_opt_in_that_shares_responses() {
    let (app, count) = harness(
        IdempotencyLayer::new().per(palisade::key::Global),
        with_session(),
    );
    send(&app, post_as("k-alice", Some(KEY), "{}")).await;
    let bob = send(&app, post_as("k-bob", Some(KEY), "{}")).await;
    assert_eq!(count.get(), 1);
    assert!(bob.replayed(), "one namespace: what the docs warn about");
    assert_eq!(bob.body, "paid for k-alice");
    assert!(!bob.headers.contains_key(SET_COOKIE), "still no cookie");
}

#[tokio::test]
async fn set_cookie_is_not_replayed_by_default() {
    let (app, _) = harness(IdempotencyLayer::new(), with_session());
    let first = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(first.headers.get_all(SET_COOKIE).iter().count(), 2);
    let replay = send(&app, post(Some(KEY), "{}")).await;
    assert!(replay.replayed());
    assert!(!replay.headers.contains_key(SET_COOKIE));
    assert_eq!(replay.headers["x-call"], "0", "other headers are kept");
    assert_eq!(replay.body, first.body);
}

#[tokio::test]
async fn set_cookie_is_replayed_when_asked() {
    for layer in [
        IdempotencyLayer::new().replay_session_headers(true),
        IdempotencyLayer::new().stored_headers([SET_COOKIE]),
    ] {
        let (app, _) = harness(layer, with_session());
        let first = send(&app, post(Some(KEY), "{}")).await;
        let replay = send(&app, post(Some(KEY), "{}")).await;
        assert!(replay.replayed());
        let cookies = |a: &crate::common::Answer| -> Vec<_> {
            a.headers.get_all(SET_COOKIE).iter().cloned().collect()
        };
        assert_eq!(cookies(&replay), cookies(&first));
        assert_eq!(cookies(&replay).len(), 2);
    }
}

fn request(headers: &[(&str, &[u8])], peer: Option<&str>) -> Request<()> {
    let mut req = Request::new(());
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
    }
    req
}

#[test]
fn caller_prefers_the_api_key_then_authorization_then_the_address() {
    let caller = Caller::new();
    let peer = Some("198.51.100.4:443");
    let key = |headers: &[(&str, &[u8])]| caller.extract(&request(headers, peer));
    assert_eq!(key(&[]).as_deref(), Some("ip:198.51.100.4"));
    assert_eq!(
        key(&[("authorization", b"Basic dTpw")]).as_deref(),
        Some("authorization:Basic dTpw")
    );
    assert_eq!(
        key(&[("authorization", b"Basic dTpw"), ("x-api-key", b" k-1 ")]).as_deref(),
        Some("x-api-key:k-1")
    );
    let jwt = format!("Bearer {}", "a".repeat(2000));
    assert_eq!(
        key(&[("authorization", jwt.as_bytes())]),
        Some(format!("authorization:{jwt}")),
        "a long token is still the caller, never the address"
    );
    assert_eq!(caller.extract(&request(&[], None)), None);
}

#[test]
fn an_unusable_credential_is_no_caller_rather_than_the_address() {
    let caller = Caller::new();
    let peer = Some("198.51.100.4:443");
    let too_long = "k".repeat(8 * 1024 + 1);
    for headers in [
        &[("x-api-key", &b""[..])][..],
        &[("x-api-key", b"  ")],
        &[("x-api-key", b"k-1"), ("x-api-key", b"k-2")],
        &[("x-api-key", "caf\u{e9}".as_bytes())],
        &[("x-api-key", too_long.as_bytes())],
        &[("x-api-key", b""), ("authorization", b"Bearer t")],
        &[
            ("authorization", b"Bearer a"),
            ("authorization", b"Bearer b"),
        ],
    ] {
        assert_eq!(caller.extract(&request(headers, peer)), None, "{headers:?}");
    }
}

#[test]
fn caller_reads_the_client_behind_trusted_proxies() {
    let caller = Caller::new().client_ip(ClientIp::new().trust(["10.0.0.0/8".parse().unwrap()]));
    let req = request(&[("x-forwarded-for", b"203.0.113.9")], Some("10.1.2.3:443"));
    assert_eq!(caller.extract(&req).as_deref(), Some("ip:203.0.113.9"));
}
