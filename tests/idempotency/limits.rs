//! Out-of-range durations and the memory store's default bounds: no input
//! panics, and the default store cannot grow without limit.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::{
    Claim, Completion, DEFAULT_MAX_KEYS, IdempotencyLayer, MAX_RETRY_AFTER, MemoryStore, Record,
    Store, StoreError, StoredResponse,
};
use palisade::key::Global;
use tokio::sync::Notify;

use crate::common::{Handler, answer, harness, post, send};
use crate::store_contract::{claimed, fp, token};

type Setter =
    fn(IdempotencyLayer<MemoryStore, Global>, Duration) -> IdempotencyLayer<MemoryStore, Global>;

/// Every duration setter with `Duration::MAX` and `ZERO`: a request runs
/// once and its retry replays (or, for a zero TTL, runs again), no panic.
#[tokio::test(start_paused = true)]
async fn every_duration_setter_takes_max_and_zero() {
    let setters: [(&str, Setter); 4] = [
        ("ttl", |l, d| l.ttl(d)),
        ("lease", |l, d| l.lease(d)),
        ("wait_for_in_flight", |l, d| l.wait_for_in_flight(d)),
        ("in_flight_retry_after", |l, d| l.in_flight_retry_after(d)),
    ];
    for (name, set) in setters {
        for d in [Duration::MAX, Duration::ZERO] {
            let layer = set(IdempotencyLayer::new().per(Global), d);
            let (app, count) = harness(layer, answer(StatusCode::CREATED, "made"));
            let first = send(&app, post(Some("k"), "{}")).await;
            assert_eq!(first.status, StatusCode::CREATED, "{name}({d:?})");
            let retry = send(&app, post(Some("k"), "{}")).await;
            if name == "ttl" && d == Duration::ZERO {
                continue; // kept 1 ms: the retry may run again, by design
            }
            assert!(retry.replayed(), "{name}({d:?}): {:?}", retry.status);
            assert_eq!(count.get(), 1, "{name}({d:?})");
        }
    }
}

/// The longest TTL keeps the record past the lease: a retry long after
/// replays instead of running again.
#[tokio::test(start_paused = true)]
async fn the_longest_ttl_keeps_the_record() {
    let layer = IdempotencyLayer::new().per(Global).ttl(Duration::MAX);
    let (app, count) = harness(layer, answer(StatusCode::CREATED, "made"));
    send(&app, post(Some("k"), "{}")).await;
    tokio::time::advance(Duration::from_secs(2 * 24 * 60 * 60)).await;
    assert!(send(&app, post(Some("k"), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
}

/// A `409`'s `Retry-After` with the longest setting is a small number,
/// bounded by the lease left.
#[tokio::test(start_paused = true)]
async fn the_longest_retry_after_is_bounded() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let held: Handler = Arc::new(move |_req, _n| {
        let g = g.clone();
        Box::pin(async move {
            g.notified().await;
            Response::new(Full::new(Bytes::new()))
        })
    });
    let layer = IdempotencyLayer::new()
        .per(Global)
        .in_flight_retry_after(Duration::MAX);
    let (app, _) = harness(layer, held);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(Some("k"), "{}")).await }
    });
    tokio::task::yield_now().await;
    let busy = send(&app, post(Some("k"), "{}")).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    let secs: u64 = busy.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=MAX_RETRY_AFTER.as_secs()).contains(&secs), "{secs}");
    assert!(secs <= 10, "never more than the lease left: {secs}");
    gate.notify_one();
    first.await.unwrap();
}

/// `MemoryStore::new` (what `IdempotencyLayer::new` uses) refuses new keys
/// once it holds `DEFAULT_MAX_KEYS` live ones, never evicts a live
/// record, and makes room when records expire.
#[tokio::test(start_paused = true)]
async fn the_default_memory_store_is_bounded() {
    let store = MemoryStore::new();
    let lease = Duration::from_secs(10);
    for i in 0..DEFAULT_MAX_KEYS.get() {
        claimed(&store, &format!("k{i}"), lease).await;
    }
    assert!(matches!(
        store.claim("one-more", &fp(1), token(), lease).await,
        Err(StoreError::Full)
    ));
    assert!(
        matches!(
            store.claim("k0", &fp(1), token(), lease).await.unwrap(),
            Claim::Existing(Record::InFlight { .. })
        ),
        "a live record is never evicted"
    );
    tokio::time::advance(lease + Duration::from_millis(1)).await;
    claimed(&store, "one-more", lease).await;
    assert_eq!(store.len(), 1, "expired records were swept");
}

fn response(bytes: usize) -> Arc<StoredResponse> {
    Arc::new(StoredResponse::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from(vec![b'x'; bytes]),
    ))
}

/// The byte budget: a response that would pass it is recorded as not
/// retained (a retry gets 410, never a second run); a full budget refuses
/// new keys until records expire.
#[tokio::test(start_paused = true)]
async fn the_memory_store_keeps_responses_within_its_byte_budget() {
    let store = MemoryStore::with_max_keys(NonZeroUsize::new(100).unwrap())
        .max_bytes(NonZeroUsize::new(1000).unwrap());
    let ttl = Duration::from_secs(60);
    for (key, size) in [("a", 600), ("b", 600), ("c", 400)] {
        let lease = claimed(&store, key, ttl).await;
        let done = store.complete(key, lease, Completion::Retained(response(size)), ttl);
        assert!(done.await.unwrap());
    }
    let kept = |key: &'static str| {
        let store = store.clone();
        async move {
            match store.claim(key, &fp(1), token(), ttl).await.unwrap() {
                Claim::Existing(Record::Completed { response, .. }) => response.is_some(),
                other => panic!("{other:?}"),
            }
        }
    };
    assert!(kept("a").await);
    assert!(!kept("b").await, "over the budget: completed, not kept");
    assert!(kept("c").await);
    assert_eq!(store.bytes(), 1000);
    assert!(matches!(
        store.claim("d", &fp(1), token(), ttl).await,
        Err(StoreError::Full)
    ));
    tokio::time::advance(ttl + Duration::from_millis(1)).await;
    claimed(&store, "d", ttl).await;
    assert_eq!(store.bytes(), 0);
}

/// A full store sweeps only once a record can have expired, and a
/// completion with a TTL shorter than its lease counts: the room it frees
/// is found as soon as it expires.
#[tokio::test(start_paused = true)]
async fn a_full_store_finds_the_room_a_short_ttl_frees() {
    let store = MemoryStore::with_max_keys(NonZeroUsize::new(1).unwrap());
    let lease = claimed(&store, "a", Duration::from_secs(60)).await;
    let ttl = Duration::from_secs(1);
    // Refused after a sweep: nothing expires for a minute now.
    assert!(matches!(
        store.claim("b", &fp(1), token(), ttl).await,
        Err(StoreError::Full)
    ));
    assert!(
        store
            .complete("a", lease, Completion::NotRetained, ttl)
            .await
            .unwrap()
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    claimed(&store, "b", Duration::from_secs(60)).await;
    assert_eq!(store.len(), 1);
}
