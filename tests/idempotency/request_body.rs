//! The request body the layer buffers to fingerprint: its limit, a body that
//! fails, and a body in several chunks handed on whole.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade::idempotency::{Error, IdempotencyLayer};
use palisade::key::Global;
use palisade::problem::{IntoProblem, types};
use tower::{Layer, Service, ServiceExt};

/// A body sent in `chunks`, with no size hint, failing at the end when
/// `fail` is set.
fn chunked(chunks: &[&'static str], fail: bool) -> Body {
    let mut items: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|c| Ok(Bytes::from_static(c.as_bytes())))
        .collect();
    if fail {
        items.push(Err(std::io::Error::other("connection reset")));
    }
    Body::from_stream(futures::stream::iter(items))
}

fn post(key: &str, body: Body) -> Request<Body> {
    Request::post("/payments")
        .header("idempotency-key", key)
        .body(body)
        .unwrap()
}

/// The layer over a handler that counts its calls and echoes the body it got.
fn app(
    limit: usize,
) -> (
    impl Service<
        Request<Body>,
        Response = Response<palisade::idempotency::ResponseBody<Body>>,
        Error = Error<Infallible>,
    > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = tower::service_fn(move |req: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(Response::new(Body::from(body)))
        }
    });
    let layer = IdempotencyLayer::new().per(Global).body_limit(limit);
    (layer.layer(handler), calls)
}

async fn body_of(response: Response<palisade::idempotency::ResponseBody<Body>>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_body_in_chunks_is_handed_on_whole_and_replays_a_body_in_one_chunk() {
    let (svc, calls) = app(64);
    let first = svc
        .clone()
        .oneshot(post("k1", chunked(&["{\"amount\":", "", "4200}"], false)))
        .await
        .unwrap();
    assert_eq!(body_of(first).await, "{\"amount\":4200}");
    // The same bytes in one chunk are the same request: replayed.
    let retry = svc
        .clone()
        .oneshot(post("k1", Body::from("{\"amount\":4200}")))
        .await
        .unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(body_of(retry).await, "{\"amount\":4200}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_at_the_limit_runs_and_one_byte_more_is_refused_unread_by_the_handler() {
    let (svc, calls) = app(8);
    let at_limit = svc
        .clone()
        .oneshot(post("k1", chunked(&["1234", "5678"], false)))
        .await
        .unwrap();
    assert_eq!(body_of(at_limit).await, "12345678");

    // Without a size hint, found while reading.
    let over = svc
        .clone()
        .oneshot(post("k2", chunked(&["1234", "56789"], false)))
        .await;
    let Err(Error::BodyTooLarge { limit: 8 }) = over else {
        panic!("expected 413, got {over:?}");
    };
    // With an exact size hint (a Content-Length), refused before reading.
    let over = svc
        .clone()
        .oneshot(post("k3", Body::from("123456789")))
        .await;
    let Err(error @ Error::BodyTooLarge { .. }) = over else {
        panic!("expected 413, got {over:?}");
    };
    assert_eq!(error.to_string(), "request body is larger than 8 bytes");
    assert_eq!(error.into_problem().type_uri(), types::BODY_TOO_LARGE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_fails_is_refused_and_claims_nothing() {
    let (svc, calls) = app(64);
    let failed = svc
        .clone()
        .oneshot(post("k1", chunked(&["{\"amount\":"], true)))
        .await;
    let Err(error @ Error::Body(_)) = failed else {
        panic!("expected a body error, got {failed:?}");
    };
    assert_eq!(error.to_string(), "failed to read the request body");
    let problem = error.into_problem();
    assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem.type_uri(), types::BODY_READ_FAILED);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Nothing was claimed: the same key with a whole body runs.
    let ok = svc
        .clone()
        .oneshot(post("k1", Body::from("{\"amount\":1}")))
        .await
        .unwrap();
    assert_eq!(body_of(ok).await, "{\"amount\":1}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
