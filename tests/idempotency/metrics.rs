//! `palisade_idempotency_requests_total` after a known sequence of
//! requests on the memory store, read from a thread-local recorder.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use palisade::idempotency::{IdempotencyLayer, MemoryStore, OnCancel, OnStoreError};

use crate::common::{Handler, answer, harness, post, send};

fn entry(name: &str, outcome: &str, n: u32) -> (String, f64) {
    (
        format!("palisade_idempotency_requests_total{{name=\"{name}\",outcome=\"{outcome}\"}}"),
        f64::from(n),
    )
}

fn pending() -> Handler {
    Arc::new(|_req, _n| Box::pin(futures::future::pending()))
}

#[test]
fn a_known_sequence_counts_each_request_once_under_its_outcome() {
    let ((), counts) = crate::recording::record_metrics("palisade_idempotency_", || async {
        let ok = || answer(StatusCode::CREATED, r#"{"id":"ch_1"}"#);
        let (payments, ran) = harness(IdempotencyLayer::new().name("payments"), ok());
        assert_eq!(send(&payments, post(Some("k1"), "{}")).await.status, 201);
        assert!(send(&payments, post(Some("k1"), "{}")).await.replayed());
        assert_eq!(
            send(&payments, post(Some("k1"), "{\"a\":1}")).await.status,
            422
        );
        assert_eq!(send(&payments, post(None, "{}")).await.status, 400);
        assert_eq!(send(&payments, post(Some(""), "{}")).await.status, 400);
        assert_eq!(ran.get(), 1);

        // A 502 is not stored: the key is released and a retry runs again.
        let (flaky, ran) = harness(
            IdempotencyLayer::new().name("flaky"),
            answer(StatusCode::BAD_GATEWAY, "down"),
        );
        for _ in 0..2 {
            assert_eq!(send(&flaky, post(Some("k2"), "{}")).await.status, 502);
        }
        assert_eq!(ran.get(), 2);

        // Too large to keep: it ran once, and its retry gets 410.
        let (large, _) = harness(
            IdempotencyLayer::new().response_body_limit(2).name("large"),
            ok(),
        );
        assert_eq!(send(&large, post(Some("k3"), "{}")).await.status, 201);
        assert_eq!(send(&large, post(Some("k3"), "{}")).await.status, 410);

        let (limited, _) = harness(IdempotencyLayer::new().body_limit(1).name("limited"), ok());
        assert_eq!(send(&limited, post(Some("k4"), "{}")).await.status, 413);

        let (scoped, _) = harness(
            IdempotencyLayer::new()
                .per(|_: &Request<_>| None::<String>)
                .name("scoped"),
            ok(),
        );
        assert_eq!(send(&scoped, post(Some("k4"), "{}")).await.status, 400);

        // A store with room for one record: a dropped request holds its key
        // (not stored), a duplicate conflicts, another key finds the store
        // full (closed here, open in the next layer over the same store).
        let store = MemoryStore::with_max_keys(NonZeroUsize::new(1).unwrap());
        let (held, _) = harness(
            IdempotencyLayer::with_store(store.clone())
                .on_cancel(OnCancel::Hold)
                .name("held"),
            pending(),
        );
        let dropped = tokio::time::timeout(
            Duration::from_millis(5),
            send(&held, post(Some("k5"), "{}")),
        );
        assert!(dropped.await.is_err(), "the handler never answers");
        assert_eq!(send(&held, post(Some("k5"), "{}")).await.status, 409);
        assert_eq!(send(&held, post(Some("k6"), "{}")).await.status, 503);
        let (open, ran) = harness(
            IdempotencyLayer::with_store(store)
                .on_store_error(OnStoreError::FailOpen)
                .name("open"),
            ok(),
        );
        assert_eq!(send(&open, post(Some("k7"), "{}")).await.status, 201);
        assert_eq!(ran.get(), 1);
    });
    let expected = BTreeMap::from([
        entry("payments", "executed", 1),
        entry("payments", "replayed", 1),
        entry("payments", "mismatch", 1),
        entry("payments", "invalid_key", 2),
        entry("flaky", "not_stored", 2),
        entry("large", "not_stored", 1),
        entry("large", "gone", 1),
        entry("limited", "body_rejected", 1),
        entry("scoped", "missing_caller_key", 1),
        entry("held", "not_stored", 1),
        entry("held", "conflict", 1),
        entry("held", "failed_closed", 1),
        entry("open", "failed_open", 1),
    ]);
    assert_eq!(counts, expected);
}

#[test]
fn a_request_dropped_mid_run_with_release_counts_as_not_stored_once() {
    let ((), counts) = crate::recording::record_metrics("palisade_idempotency_", || async {
        let layer = IdempotencyLayer::new().on_cancel(OnCancel::Release);
        let (app, ran) = harness(layer, pending());
        for _ in 0..2 {
            let dropped =
                tokio::time::timeout(Duration::from_millis(5), send(&app, post(Some("k"), "{}")));
            assert!(dropped.await.is_err());
        }
        assert_eq!(ran.get(), 2, "released, so the retry ran again");
    });
    assert_eq!(counts, BTreeMap::from([entry("default", "not_stored", 2)]));
}
