//! The tracing events: claimed, replayed, in-flight conflict, mismatch,
//! released, stored, store error.

use http::StatusCode;
use palisade::idempotency::{IdempotencyLayer, MemoryStore, OnCancel};

use crate::common::{answer, harness, post, send};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_outcome_emits_its_event() {
    let capture = crate::support::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (app, _) = harness(IdempotencyLayer::new(), answer(StatusCode::OK, "ok"));
    send(&app, post(Some("k1"), "{}")).await;
    send(&app, post(Some("k1"), "{}")).await;
    send(&app, post(Some("k1"), "other")).await;
    let (failing, _) = harness(
        IdempotencyLayer::new(),
        answer(StatusCode::BAD_GATEWAY, "down"),
    );
    send(&failing, post(Some("k2"), "{}")).await;
    let store = MemoryStore::bounded(1);
    let (held, _) = harness(
        IdempotencyLayer::with_store(store.clone()).on_cancel(OnCancel::Hold),
        std::sync::Arc::new(|_req, _n| Box::pin(futures::future::pending())),
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(5),
        send(&held, post(Some("k3"), "{}")),
    )
    .await;
    send(&held, post(Some("k3"), "{}")).await;
    send(&held, post(Some("k4"), "{}")).await;

    let log = capture.text();
    for event in [
        "idempotency key claimed",
        "idempotent response stored",
        "idempotent response replayed",
        "idempotency key reused with a different request",
        "idempotency key released",
        "idempotency key in flight",
        "idempotency store error",
    ] {
        assert!(log.contains(event), "no {event:?} event in:\n{log}");
    }
    assert!(log.contains("key=\"k1\""), "events carry the key:\n{log}");
}
