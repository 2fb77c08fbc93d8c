//! `RedisStore::wait_for_replicas`: claims and completions wait for a
//! replica (`WAIT`), and without one a claim fails within its bound.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use http::StatusCode;
use palisade::idempotency::{Claim, Fingerprint, IdempotencyLayer, RedisStore, Store, StoreError};

use crate::common::{answer, harness, post, send};
use crate::support::RedisServer;

const KEY: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

#[tokio::test]
async fn claims_and_completions_wait_for_replicas_and_fail_without_them() {
    let Some(primary) = RedisServer::start_or_skip("wait_for_replicas") else {
        return;
    };
    let mut replica = RedisServer::start_replica_of(&primary);
    let wait = Duration::from_secs(1);
    let store = RedisStore::connect(&primary.url())
        .await
        .expect("connect")
        .timeout(Duration::from_millis(500))
        .wait_for_replicas(NonZeroU32::MIN, wait);
    let (app, count) = harness(
        IdempotencyLayer::with_store(store.clone()),
        answer(StatusCode::CREATED, "ok"),
    );
    primary.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::CREATED
    );
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
    assert_eq!(
        primary.command_calls(&["wait"]),
        2,
        "one WAIT after the claim, one after the completion, none for the replay"
    );
    // WAIT returned 1: the replica holds the record and its fence counter.
    assert_eq!(replica.cli(&["DBSIZE"]), "2");

    replica.kill();
    let fingerprint = Fingerprint::from_slice(&[7; 32]).unwrap();
    for attempt in 0..2 {
        let started = Instant::now();
        let refused = store
            .claim(
                "unreplicated",
                &fingerprint,
                100 + attempt,
                Duration::from_secs(60),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::NotReplicated { acked: 0, wanted: 1, timeout }) if timeout == wait
            ),
            "attempt {attempt}: {refused:?}"
        );
        // Bounded by the wait (1 s) plus the store timeout (500 ms); the
        // bound here only tells "returned" from "hung" on a loaded box.
        assert!(started.elapsed() < Duration::from_secs(20));
        // The second attempt claims again rather than finding the first
        // in flight: a refused claim is released.
    }
    let refused = send(&app, post(Some("another-key"), "{}")).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "fails closed"
    );
    assert_eq!(count.get(), 1, "nothing ran");

    // Without the option, no WAIT at all.
    let plain = RedisStore::connect(&primary.url()).await.expect("connect");
    primary.cli(&["CONFIG", "RESETSTAT"]);
    let claim = plain
        .claim("plain", &fingerprint, 7, Duration::from_secs(60))
        .await
        .unwrap();
    let Claim::Claimed(lease) = claim else {
        panic!("{claim:?}")
    };
    plain.release("plain", lease.token).await.unwrap();
    assert_eq!(primary.command_calls(&["wait"]), 0);
}
