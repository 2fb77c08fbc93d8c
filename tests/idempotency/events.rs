//! The tracing events: each carries `layer`, `name`, `outcome` and a digest
//! of the `Idempotency-Key`, never the key or the caller's API key.

use std::num::NonZeroUsize;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use palisade::idempotency::{IdempotencyLayer, MemoryStore, OnCancel};
use palisade::observability::redact_key;

use crate::common::{Req, answer, harness, send};

const IDEMPOTENCY_KEY: &str = "idem-8e03978e-40d5-43e8-bc93";
const API_KEY: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";

fn post(key: Option<&str>, body: &str) -> Req {
    let mut builder = Request::post("/payments").header("x-api-key", API_KEY);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn by_api_key(req: &Req) -> Option<String> {
    Some(req.headers().get("x-api-key")?.to_str().ok()?.to_owned())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_outcome_is_an_event_with_the_uniform_fields_and_no_raw_key() {
    let logs = crate::support::CapturedLogs::start();

    let layer = || IdempotencyLayer::new().per(by_api_key).name("payments");
    let (app, _) = harness(layer(), answer(StatusCode::OK, "ok"));
    send(&app, post(Some(IDEMPOTENCY_KEY), "{}")).await;
    send(&app, post(Some(IDEMPOTENCY_KEY), "{}")).await;
    send(&app, post(Some(IDEMPOTENCY_KEY), "other")).await;
    send(&app, post(None, "{}")).await;
    let (failing, _) = harness(layer(), answer(StatusCode::BAD_GATEWAY, "down"));
    send(&failing, post(Some(IDEMPOTENCY_KEY), "{}")).await;
    let store = MemoryStore::with_max_keys(NonZeroUsize::new(1).unwrap());
    let (held, _) = harness(
        IdempotencyLayer::with_store(store)
            .per(by_api_key)
            .on_cancel(OnCancel::Hold)
            .name("payments"),
        std::sync::Arc::new(|_req, _n| Box::pin(futures::future::pending())),
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(5),
        send(&held, post(Some(IDEMPOTENCY_KEY), "{}")),
    )
    .await;
    send(&held, post(Some(IDEMPOTENCY_KEY), "{}")).await;
    send(&held, post(Some("another-key"), "{}")).await;

    let log = logs.text();
    let digest = format!("key={}", redact_key(IDEMPOTENCY_KEY));
    let line = |message: &str, outcome: Option<&str>| -> String {
        let outcome = outcome.map(|o| format!("outcome=\"{o}\""));
        log.lines()
            .find(|l| {
                l.contains(message) && outcome.as_ref().is_none_or(|o| l.contains(o.as_str()))
            })
            .unwrap_or_else(|| panic!("no {message:?} {outcome:?} event in:\n{log}"))
            .to_owned()
    };
    for (level, message, outcome) in [
        ("TRACE", "idempotency key claimed", None),
        ("TRACE", "idempotent response stored", Some("executed")),
        ("DEBUG", "idempotent response replayed", Some("replayed")),
        ("DEBUG", "reused with a different request", Some("mismatch")),
        ("DEBUG", "idempotency key released", Some("not_stored")),
        (
            "DEBUG",
            "key held until its lease expires",
            Some("not_stored"),
        ),
        ("DEBUG", "idempotency key in flight", Some("conflict")),
        (" WARN", "idempotency store error", Some("failed_closed")),
    ] {
        let line = line(message, outcome);
        assert!(line.contains(level), "{message} at {level}: {line}");
        assert!(line.contains("layer=\"idempotency\""), "{line}");
        assert!(line.contains("name=\"payments\""), "{line}");
        if outcome != Some("failed_closed") {
            assert!(line.contains(&digest), "{digest} in {line}");
        }
    }
    for message in ["idempotency key claimed", "idempotent response replayed"] {
        assert!(line(message, None).contains("latency_us="), "{message}");
    }
    let invalid = line("invalid idempotency key", Some("invalid_key"));
    assert!(!invalid.contains("key="), "no key to log: {invalid}");
    assert!(
        !log.contains(IDEMPOTENCY_KEY),
        "the raw Idempotency-Key is in the logs:\n{log}"
    );
    assert!(
        !log.contains(API_KEY),
        "the caller's API key is in the logs:\n{log}"
    );
}

/// A run moved to a task of its own when its request is dropped
/// (`OnCancel::Detach`) stays in the request's span.
#[tokio::test]
async fn a_detached_run_keeps_the_request_span() {
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;
    use tower::{Layer, ServiceExt};
    use tracing::Instrument;

    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let release = Arc::new(Notify::new());
    let seen = Arc::new(Mutex::new(Vec::<Option<&'static str>>::new()));
    let (gate, record) = (release.clone(), seen.clone());
    let handler = tower::service_fn(move |_req: Req| {
        let (gate, record) = (gate.clone(), record.clone());
        async move {
            let span = || tracing::Span::current().metadata().map(|m| m.name());
            record.lock().unwrap().push(span());
            gate.notified().await;
            record.lock().unwrap().push(span());
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"done",
            ))))
        }
    });
    let svc = IdempotencyLayer::new()
        .per(palisade::key::Global)
        .on_cancel(OnCancel::Detach)
        .layer(handler);
    let request = Request::post("/payments")
        .header("idempotency-key", IDEMPOTENCY_KEY)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let call = svc
        .oneshot(request)
        .instrument(tracing::info_span!("request"));
    // Dropped while the handler waits: the run moves to a task of its own.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(10), call)
            .await
            .is_err()
    );
    release.notify_one();
    for _ in 0..100 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(*seen.lock().unwrap(), [Some("request"), Some("request")]);
}
