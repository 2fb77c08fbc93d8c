//! The server layer over the memory store.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::default_store_when;
use palisade::idempotency::{
    Fence, FingerprintMode, IdempotencyKey, IdempotencyLayer, MemoryStore, OnCancel,
};
use palisade::key::CallerKey;
use palisade::problem::types;
use tokio::sync::Notify;

use crate::common::{App, CALLER, Counter, Handler, Req, answer, call, harness, post, send};

const KEY: &str = "8e03978e-40d5-43e8-bc93-6894a57f9324";

fn ok_app() -> (App, Counter) {
    harness(
        IdempotencyLayer::new(),
        answer(StatusCode::CREATED, r#"{"id":"ord_1"}"#),
    )
}

#[tokio::test]
async fn replays_stored_response_byte_identical_and_runs_once() {
    let (app, count) = ok_app();
    let first = send(&app, post(Some(KEY), r#"{"amount":100}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    let second = send(&app, post(Some(KEY), r#"{"amount":100}"#)).await;
    assert_eq!(count.get(), 1, "the handler ran once");
    assert!(second.replayed());
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body);
    let mut replayed_headers = second.headers.clone();
    replayed_headers.remove("idempotent-replayed");
    assert_eq!(
        replayed_headers, first.headers,
        "same headers, byte for byte"
    );
    assert_eq!(
        second.headers["x-call"], "0",
        "the replay is the first call's response"
    );
}

/// Two worker threads, so duplicates really race; the one that runs waits
/// until the other 199 have been answered, then finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_duplicates_run_once() {
    let others_done = Arc::new(Notify::new());
    let gate = others_done.clone();
    let slow: Handler = Arc::new(move |_req, n| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.notified().await;
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    });
    let (app, count) = harness(IdempotencyLayer::new(), slow);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let answer = send(&app, post(Some(KEY), "{}")).await;
                let _ = done.send(());
                answer
            })
        })
        .collect();
    // Bounded so a second execution (which would wait on the gate too)
    // fails the test instead of hanging it.
    for answered in 0..199 {
        tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {answered} duplicates were answered: more than one is running")
            });
    }
    others_done.notify_one();
    let answers = join_all(tasks).await;
    assert_eq!(count.get(), 1, "exactly one execution");
    let mut ran = 0;
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status {
            StatusCode::OK if !answer.replayed() => ran += 1,
            StatusCode::OK => assert_eq!(answer.body, "call 0"),
            StatusCode::CONFLICT => {
                assert_eq!(answer.problem_type(), types::IN_FLIGHT);
                assert_eq!(answer.headers["retry-after"], "1");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ran, 1);
    // After the first finished, a duplicate replays.
    let late = send(&app, post(Some(KEY), "{}")).await;
    assert!(late.replayed());
    assert_eq!(count.get(), 1);
}

#[tokio::test]
async fn same_key_with_other_body_is_422() {
    let (app, count) = ok_app();
    send(&app, post(Some(KEY), r#"{"amount":100}"#)).await;
    let other = send(&app, post(Some(KEY), r#"{"amount":999}"#)).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    assert_eq!(other.problem_type(), types::KEY_REUSED);
    assert_eq!(count.get(), 1);
}

#[tokio::test]
async fn same_key_while_in_flight_with_other_body_is_422() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let handler: Handler = Arc::new(move |_req, _n| {
        let g = g.clone();
        Box::pin(async move {
            g.notified().await;
            Response::new(Full::new(Bytes::new()))
        })
    });
    let (app, _count) = harness(IdempotencyLayer::new(), handler);
    let first = tokio::spawn(call(&app, post(Some(KEY), "a")));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        send(&app, post(Some(KEY), "b")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(&app, post(Some(KEY), "a")).await.status,
        StatusCode::CONFLICT
    );
    gate.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn canonical_json_fingerprint_accepts_reserialised_payload() {
    let layer = IdempotencyLayer::new().fingerprint_mode(FingerprintMode::CanonicalJson);
    let (app, count) = harness(layer, answer(StatusCode::CREATED, "ok"));
    send(&app, post(Some(KEY), r#"{"amount":100,"currency":"eur"}"#)).await;
    let again = send(
        &app,
        post(Some(KEY), "{ \"currency\": \"eur\",\n  \"amount\": 100 }"),
    )
    .await;
    assert!(again.replayed());
    let changed = send(&app, post(Some(KEY), r#"{"currency":"eur","amount":101}"#)).await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count.get(), 1);

    // The default (exact bytes) refuses the re-serialised payload.
    let (exact, _) = ok_app();
    send(
        &exact,
        post(Some(KEY), r#"{"amount":100,"currency":"eur"}"#),
    )
    .await;
    let reordered = send(
        &exact,
        post(Some(KEY), r#"{"currency":"eur","amount":100}"#),
    )
    .await;
    assert_eq!(reordered.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn chosen_headers_enter_the_fingerprint() {
    let layer = IdempotencyLayer::new()
        .fingerprint_headers([http::header::HeaderName::from_static("x-account")]);
    let (app, _) = harness(layer, answer(StatusCode::OK, "ok"));
    let with = |account: &str| {
        let mut req = post(Some(KEY), "{}");
        req.headers_mut()
            .insert("x-account", account.parse().unwrap());
        req
    };
    send(&app, with("a")).await;
    assert!(send(&app, with("a")).await.replayed());
    assert_eq!(
        send(&app, with("b")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn missing_and_invalid_keys_are_400_and_nothing_runs() {
    let (app, count) = ok_app();
    let missing = send(&app, post(None, "{}")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.problem_type(), types::MISSING_IDEMPOTENCY_KEY);

    let too_long = "k".repeat(256);
    for bad in ["", too_long.as_str(), "has space", "tab\there"] {
        let answer = send(&app, post(Some(bad), "{}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "key {bad:?}");
        assert_eq!(
            answer.problem_type(),
            types::INVALID_IDEMPOTENCY_KEY,
            "key {bad:?}"
        );
    }
    let mut non_ascii = post(None, "{}");
    non_ascii.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
    );
    assert_eq!(send(&app, non_ascii).await.status, StatusCode::BAD_REQUEST);
    let mut twice = post(Some("a"), "{}");
    twice
        .headers_mut()
        .append("idempotency-key", "b".parse().unwrap());
    assert_eq!(send(&app, twice).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(count.get(), 0, "no invalid request reached the handler");

    // The longest valid key works.
    let longest = "k".repeat(255);
    assert_eq!(
        send(&app, post(Some(&longest), "{}")).await.status,
        StatusCode::CREATED
    );
    assert!(IdempotencyKey::new("k".repeat(256)).is_err());
}

#[tokio::test]
async fn optional_mode_runs_keyless_requests_every_time() {
    let (app, count) = harness(
        IdempotencyLayer::new().optional(true),
        answer(StatusCode::CREATED, "ok"),
    );
    send(&app, post(None, "{}")).await;
    send(&app, post(None, "{}")).await;
    assert_eq!(count.get(), 2);
    send(&app, post(Some(KEY), "{}")).await;
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(count.get(), 3);
}

#[tokio::test]
async fn other_methods_pass_through() {
    let (app, count) = ok_app();
    let get = || {
        Request::get("/payments")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(send(&app, get()).await.status, StatusCode::CREATED);
    assert_eq!(send(&app, get()).await.status, StatusCode::CREATED);
    assert_eq!(count.get(), 2);
}

#[tokio::test]
async fn keys_are_scoped_by_caller_method_and_path() {
    let by_api_key = |req: &Req| {
        req.headers()
            .get("x-api-key")?
            .to_str()
            .ok()
            .map(str::to_owned)
    };
    let (app, count) = harness(
        IdempotencyLayer::new().per(by_api_key),
        answer(StatusCode::CREATED, "ok"),
    );
    let from = |caller: &str| {
        let mut req = post(Some(KEY), "{}");
        req.headers_mut()
            .insert("x-api-key", caller.parse().unwrap());
        req
    };
    assert!(!send(&app, from("alice")).await.replayed());
    assert!(
        !send(&app, from("bob")).await.replayed(),
        "bob never gets alice's response"
    );
    assert_eq!(count.get(), 2, "the same key from two callers runs twice");
    assert!(send(&app, from("alice")).await.replayed());

    let mut other_path = from("alice");
    *other_path.uri_mut() = "/refunds".parse().unwrap();
    assert!(!send(&app, other_path).await.replayed());
    assert_eq!(count.get(), 3);

    // No caller identity: refused, nothing runs.
    let mut anonymous = post(Some(KEY), "{}");
    anonymous.headers_mut().remove("x-api-key");
    let anonymous = send(&app, anonymous).await;
    assert_eq!(anonymous.status, StatusCode::BAD_REQUEST);
    assert_eq!(count.get(), 3);
}

/// A handler whose first call waits until `gate` is notified.
fn gated(gate: Arc<Notify>) -> Handler {
    Arc::new(move |_req, n| {
        let gate = gate.clone();
        Box::pin(async move {
            if n == 0 {
                gate.notified().await;
            }
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    })
}

#[tokio::test(start_paused = true)]
async fn release_frees_a_dropped_claim_for_an_immediate_retry() {
    let layer = IdempotencyLayer::new().on_cancel(OnCancel::Release);
    let (app, count) = harness(layer, gated(Arc::new(Notify::new())));
    let first = call(&app, post(Some(KEY), "{}"));
    // Run it into the handler, then drop it (the client went away).
    assert!(
        tokio::time::timeout(Duration::from_millis(10), first)
            .await
            .is_err()
    );
    assert_eq!(count.get(), 1);
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body, "call 1", "the retry ran");
    assert_eq!(count.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn hold_keeps_a_dropped_claim_until_the_lease_expires() {
    let layer = IdempotencyLayer::new()
        .on_cancel(OnCancel::Hold)
        .lease(Duration::from_secs(30));
    let (app, count) = harness(layer, gated(Arc::new(Notify::new())));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call(&app, post(Some(KEY), "{}")))
            .await
            .is_err()
    );
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::CONFLICT
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.body, "call 1");
    assert_eq!(count.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn detached_execution_finishes_and_stores_after_the_client_left() {
    let gate = Arc::new(Notify::new());
    let (app, count) = harness(
        IdempotencyLayer::new().on_cancel(OnCancel::Detach),
        gated(gate.clone()),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call(&app, post(Some(KEY), "{}")))
            .await
            .is_err()
    );
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::CONFLICT,
        "still running"
    );
    gate.notify_one();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert!(retry.replayed(), "the detached run stored its response");
    assert_eq!(retry.body, "call 0");
    assert_eq!(count.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn crashed_holders_claim_expires_with_its_lease() {
    let store = MemoryStore::new();
    let layer = IdempotencyLayer::with_store(store.clone()).lease(Duration::from_secs(20));
    let (app, count) = harness(layer, answer(StatusCode::CREATED, "ok"));
    // Another instance on the same store claims the key and dies mid-handler.
    let (crashing, _) = app_sharing(store.clone());
    assert!(
        tokio::time::timeout(
            Duration::from_millis(10),
            call(&crashing, post(Some(KEY), "{}"))
        )
        .await
        .is_err()
    );
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::CONFLICT
    );
    tokio::time::advance(Duration::from_secs(19)).await;
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::CONFLICT
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let after = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(!after.replayed());
    assert_eq!(count.get(), 1);
}

/// An "instance" on the same store whose handler never answers and whose
/// dropped claims are held, as a process that died would leave them.
fn app_sharing(store: MemoryStore) -> (App, Counter) {
    let never: Handler = Arc::new(|_req, _n| Box::pin(futures::future::pending()));
    harness(
        IdempotencyLayer::with_store(store)
            .on_cancel(OnCancel::Hold)
            .lease(Duration::from_secs(20)),
        never,
    )
}

#[tokio::test(start_paused = true)]
async fn handler_sees_increasing_fence_numbers() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let handler: Handler = Arc::new(move |req: Req, _n| {
        let fence = req
            .extensions()
            .get::<Fence>()
            .expect("fence extension")
            .number();
        let key = req
            .extensions()
            .get::<IdempotencyKey>()
            .expect("key extension")
            .clone();
        assert_eq!(key.as_str(), KEY);
        let caller = req
            .extensions()
            .get::<CallerKey>()
            .expect("caller extension");
        assert_eq!(caller.as_str(), format!("x-api-key:{CALLER}"));
        s.store(fence, Ordering::SeqCst);
        Box::pin(async {
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    });
    let (app, _) = harness(IdempotencyLayer::new(), handler);
    send(&app, post(Some(KEY), "{}")).await;
    let first = seen.load(Ordering::SeqCst);
    send(&app, post(Some(KEY), "{}")).await;
    assert!(
        seen.load(Ordering::SeqCst) > first,
        "a later claim has a larger fencing number"
    );
}

#[tokio::test]
async fn server_errors_are_not_stored_and_the_retry_runs() {
    let handler: Handler = Arc::new(|_req, n| {
        Box::pin(async move {
            let status = if n == 0 { 503 } else { 201 };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(format!("call {n}"))))
                .unwrap()
        })
    });
    let (app, count) = harness(IdempotencyLayer::new(), handler);
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed());
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(count.get(), 2);
}

#[tokio::test]
async fn default_policy_stores_2xx_and_4xx_except_retryable_ones() {
    for code in [200u16, 201, 204, 400, 404, 422] {
        assert!(
            default_store_when(StatusCode::from_u16(code).unwrap()),
            "{code}"
        );
    }
    for code in [408u16, 409, 429, 500, 502, 503, 504] {
        assert!(
            !default_store_when(StatusCode::from_u16(code).unwrap()),
            "{code}"
        );
    }
    // A stored 4xx is replayed; a 429 is not.
    let (app, count) = harness(
        IdempotencyLayer::new(),
        answer(StatusCode::NOT_FOUND, "no such account"),
    );
    send(&app, post(Some(KEY), "{}")).await;
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
    let (app, count) = harness(
        IdempotencyLayer::new(),
        answer(StatusCode::TOO_MANY_REQUESTS, "slow down"),
    );
    send(&app, post(Some(KEY), "{}")).await;
    send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(count.get(), 2);
}

#[tokio::test]
async fn store_when_is_configurable() {
    let layer = IdempotencyLayer::new()
        .store_when(|status| status.is_success() || status.is_server_error());
    let (app, count) = harness(layer, answer(StatusCode::INTERNAL_SERVER_ERROR, "boom"));
    send(&app, post(Some(KEY), "{}")).await;
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
}

#[tokio::test]
async fn oversized_response_passes_through_and_is_never_run_again() {
    const TWO_MIB: usize = 2 * 1024 * 1024;
    let big: Handler = Arc::new(|_req, _n| {
        Box::pin(async { Response::new(Full::new(Bytes::from(vec![b'x'; TWO_MIB]))) })
    });
    let (app, count) = harness(IdempotencyLayer::new(), big);
    let first = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.len(), TWO_MIB, "the client got the whole body");
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.status, StatusCode::GONE);
    assert_eq!(retry.problem_type(), types::NOT_RETAINED);
    assert_eq!(count.get(), 1, "not executed a second time");
}

#[tokio::test]
async fn streamed_oversized_response_is_passed_through_whole() {
    use http_body_util::StreamBody;
    // A body of unknown length, 3 chunks of 512 KiB, over a 1 MiB cap.
    let chunks = || {
        futures::stream::iter((0..3).map(|i| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![
                b'a' + i;
                512 * 1024
            ])))
        }))
    };
    let svc = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new())
        .service(tower::service_fn(move |_req: Req| async move {
            Ok::<_, std::convert::Infallible>(Response::new(StreamBody::new(chunks())))
        }));
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = svc.clone().oneshot(post(Some(KEY), "{}")).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 3 * 512 * 1024);
    assert_eq!(&body[..1], b"a");
    assert_eq!(&body[body.len() - 1..], b"c");
    let err = svc.oneshot(post(Some(KEY), "{}")).await.unwrap_err();
    assert!(
        matches!(err, palisade::idempotency::Error::NotRetained),
        "{err}"
    );
}

#[tokio::test]
async fn panicking_handler_answers_500_and_releases_the_key() {
    let handler: Handler = Arc::new(|_req, n| {
        Box::pin(async move {
            if n == 0 {
                panic!("handler bug");
            }
            Response::new(Full::new(Bytes::from("fixed")))
        })
    });
    let (app, count) = harness(IdempotencyLayer::new(), handler);
    let crashed = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(crashed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(crashed.headers["content-type"], "application/problem+json");
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body, "fixed");
    assert_eq!(count.get(), 2);
}

#[tokio::test]
async fn panic_in_call_itself_is_caught_too() {
    #[derive(Clone)]
    struct PanicsInCall;
    impl tower::Service<Req> for PanicsInCall {
        type Response = Response<Full<Bytes>>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Req) -> Self::Future {
            panic!("synchronous bug")
        }
    }
    use tower::ServiceExt;
    let store = MemoryStore::new();
    let svc = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::with_store(store.clone()))
        .service(PanicsInCall);
    let err = svc.oneshot(post(Some(KEY), "{}")).await.unwrap_err();
    assert!(matches!(err, palisade::idempotency::Error::Panicked));
    assert_eq!(store.len(), 0, "key released");
}

#[tokio::test]
async fn inner_errors_release_the_key() {
    use tower::ServiceExt;
    let store = MemoryStore::new();
    let svc = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::with_store(store.clone()))
        .service(tower::service_fn(|_req: Req| async {
            Err::<Response<Full<Bytes>>, _>(palisade::problem::Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
            ))
        }));
    let err = svc.oneshot(post(Some(KEY), "{}")).await.unwrap_err();
    assert!(matches!(err, palisade::idempotency::Error::Inner(_)));
    assert_eq!(store.len(), 0);
}

#[tokio::test]
async fn request_body_over_the_limit_is_413_and_nothing_runs() {
    let (app, count) = harness(
        IdempotencyLayer::new().body_limit(16),
        answer(StatusCode::OK, "ok"),
    );
    let answer = send(&app, post(Some(KEY), &"x".repeat(17))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(count.get(), 0);
    assert_eq!(
        send(&app, post(Some(KEY), &"x".repeat(16))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn handler_gets_the_body_unchanged() {
    let handler: Handler = Arc::new(|req: Req, _n| {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(Full::new(body))
        })
    });
    let (app, _) = harness(IdempotencyLayer::new(), handler);
    let payload = "{\"amount\": 100,\n \"note\": \"ünïcode\"}";
    assert_eq!(send(&app, post(Some(KEY), payload)).await.body, payload);
}

#[tokio::test(start_paused = true)]
async fn duplicate_can_wait_for_the_in_flight_result() {
    let gate = Arc::new(Notify::new());
    let layer = IdempotencyLayer::new().wait_for_in_flight(Duration::from_secs(2));
    let (app, count) = harness(layer, gated(gate.clone()));
    let first = tokio::spawn(call(&app, post(Some(KEY), "{}")));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(Some(KEY), "{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.notify_one();
    let waited = waiting.await.unwrap();
    assert!(waited.replayed(), "the waiting duplicate got the result");
    assert_eq!(waited.body, "call 0");
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    assert_eq!(count.get(), 1);

    // The wait is bounded: behind a holder that never finishes, 409 after the wait.
    let store = MemoryStore::new();
    let (holder, _) = app_sharing(store.clone());
    let _hold = tokio::spawn(call(&holder, post(Some(KEY), "{}")));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (waiter, waiter_count) = harness(
        IdempotencyLayer::with_store(store).wait_for_in_flight(Duration::from_secs(1)),
        answer(StatusCode::OK, "ok"),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        send(&waiter, post(Some(KEY), "{}")).await.status,
        StatusCode::CONFLICT
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(waiter_count.get(), 0);
}

#[tokio::test]
async fn works_as_an_axum_router_layer() {
    use axum::Router;
    use axum::routing::post as axum_post;
    use tower::ServiceExt;
    let router = Router::new()
        .route(
            "/payments",
            axum_post(
                |body: String| async move { (StatusCode::CREATED, format!("charged {body}")) },
            ),
        )
        .layer(
            tower::ServiceBuilder::new()
                .layer(palisade::problem::ProblemLayer::new())
                .layer(IdempotencyLayer::new()),
        );
    let req = || {
        Request::post("/payments")
            .header("x-api-key", "k-caller-1")
            .header("idempotency-key", KEY)
            .body(axum::body::Body::from("100"))
            .unwrap()
    };
    let first = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = router.clone().oneshot(req()).await.unwrap();
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let body = axum::body::to_bytes(second.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(body, "charged 100");
    let missing = router
        .oneshot(
            Request::post("/payments")
                .body(axum::body::Body::from("1"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn full_memory_store_fails_closed_with_503() {
    let (app, count) = harness(
        IdempotencyLayer::with_store(MemoryStore::with_max_keys(NonZeroUsize::new(1).unwrap())),
        answer(StatusCode::OK, "ok"),
    );
    assert_eq!(
        send(&app, post(Some("first"), "{}")).await.status,
        StatusCode::OK
    );
    let full = send(&app, post(Some("second"), "{}")).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count.get(), 1);
    assert!(send(&app, post(Some("first"), "{}")).await.replayed());
}

#[tokio::test]
async fn draft_quoted_keys_are_the_same_key_as_bare_ones() {
    let (app, count) = ok_app();
    send(&app, post(Some(KEY), "{}")).await;
    let quoted = format!("\"{KEY}\"");
    assert!(send(&app, post(Some(&quoted), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
    for bad in [
        r#""""#,
        r#""has space""#,
        r#""bad\escape""#,
        r#""un"quoted""#,
    ] {
        let answer = send(&app, post(Some(bad), "{}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "key {bad}");
    }
    let escaped =
        IdempotencyKey::from_header(&http::HeaderValue::from_static(r#""a\"b\\c""#)).unwrap();
    assert_eq!(escaped.as_str(), r#"a"b\c"#);
}
