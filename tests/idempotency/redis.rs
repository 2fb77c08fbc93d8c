//! The Redis store: the store contract with short real leases, two
//! instances racing, round trips per request, Redis down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::{IdempotencyLayer, OnCancel, OnStoreError, RedisStore};
use tokio::sync::Notify;

use crate::common::{Handler, answer, harness, post, send};
use crate::store_contract as contract;
use crate::support::RedisServer;

const KEY: &str = "5d1c0e2a-7d0b-4a8e-9a52-2a0f4ab0d6c1";

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .timeout(Duration::from_millis(500))
}

async fn real_wait(d: Duration) {
    tokio::time::sleep(d + Duration::from_millis(100)).await;
}

#[tokio::test]
async fn redis_store_contract() {
    let Some(redis) = RedisServer::start_or_skip("redis_store_contract") else {
        return;
    };
    let s = store(&redis).await;
    contract::claim_is_exclusive_and_returns_the_record(s.clone(), "a").await;
    contract::not_retained_is_recorded(s.clone(), "b").await;
    contract::release_frees_the_key_only_for_the_holder(s.clone(), "c").await;
    // Real Redis TTLs, kept short.
    let lease = Duration::from_millis(300);
    contract::stale_holder_is_fenced_out(s.clone(), "d", lease, || real_wait(lease)).await;
    contract::claims_and_records_expire(s.clone(), "e", lease, || real_wait(lease)).await;
    contract::an_unanswered_claim_is_released_by_its_token(s.clone(), "f").await;
    contract::a_repeated_completion_answers_as_the_first(s.clone(), "i").await;
    // Renewed after 1.2 s of a 2 s lease, checked at 2.4 s: 0.8 s of slack
    // each way on a loaded machine.
    let two_seconds = Duration::from_secs(2);
    contract::renew_extends_only_the_holders_lease(s.clone(), "g", two_seconds, || {
        tokio::time::sleep(Duration::from_millis(1200))
    })
    .await;
    contract::durations_out_of_range_are_clamped(s.clone(), "h").await;
    let ttl: i64 = redis.cli(&["PTTL", "palisade:idem:{h}"]).parse().unwrap();
    assert!(
        ttl > 300 * 24 * 60 * 60 * 1000,
        "a completion with the longest TTL keeps its record: {ttl}"
    );
    // Keys are prefixed and hash-tagged, record and counter in one slot.
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(
        keys.lines().all(|k| k.starts_with("palisade:idem:{")),
        "{keys}"
    );
    assert!(keys.contains("palisade:idem:{c}:fence"), "{keys}");
    assert_eq!(
        redis.cli(&["CLUSTER", "KEYSLOT", "palisade:idem:{c}"]),
        redis.cli(&["CLUSTER", "KEYSLOT", "palisade:idem:{c}:fence"])
    );
}

#[tokio::test]
async fn redis_replay_is_byte_identical_through_the_layer() {
    let Some(redis) = RedisServer::start_or_skip("redis_replay_is_byte_identical") else {
        return;
    };
    let (app, count) = harness(
        IdempotencyLayer::with_store(store(&redis).await),
        answer(StatusCode::CREATED, r#"{"id":"ord_1"}"#),
    );
    let first = send(&app, post(Some(KEY), "{}")).await;
    let second = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(count.get(), 1);
    assert!(second.replayed());
    assert_eq!((second.status, &second.body), (first.status, &first.body));
    let mut headers = second.headers.clone();
    headers.remove("idempotent-replayed");
    assert_eq!(headers, first.headers);
    assert_eq!(
        send(&app, post(Some(KEY), "{\"other\":1}")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// Two instances (two stores, two connections) on one Redis, 1,000
/// duplicates split between them: one execution. The executing handler
/// waits until the other 999 were answered, so all of them truly overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_thousand_duplicates_run_once() {
    let Some(redis) = RedisServer::start_or_skip("two_instances_thousand_duplicates") else {
        return;
    };
    let others_done = Arc::new(Notify::new());
    let gate = others_done.clone();
    let handler: Handler = Arc::new(move |_req, n| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.notified().await;
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    });
    // A thousand claims at once on a loaded machine can outlast the usual
    // 500 ms bound; this test is about one execution, not about latency, so
    // a store that answers late must not turn a duplicate into a 503.
    let patient = |store: RedisStore| store.timeout(Duration::from_secs(30));
    let (a, count_a) = harness(
        IdempotencyLayer::with_store(patient(store(&redis).await)),
        handler.clone(),
    );
    let (b, count_b) = harness(
        IdempotencyLayer::with_store(patient(store(&redis).await)),
        handler,
    );
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let done = done_tx.clone();
            tokio::spawn(async move {
                let answer = send(&app, post(Some(KEY), "{}")).await;
                let _ = done.send(());
                answer
            })
        })
        .collect();
    for answered in 0..999 {
        tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {answered} duplicates were answered: more than one is running")
            });
    }
    others_done.notify_one();
    let answers = join_all(tasks).await;
    assert_eq!(
        count_a.get() + count_b.get(),
        1,
        "exactly one execution across both instances"
    );
    let conflicts = answers
        .iter()
        .filter(|a| a.as_ref().unwrap().status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        conflicts, 999,
        "every duplicate is told the key is in flight"
    );
    let late = send(&b, post(Some(KEY), "{}")).await;
    assert!(late.replayed());
}

/// `INFO commandstats` also counts the commands a script runs; a round trip
/// is a command the client sent. Checks that every command outside the
/// scripts is one only a script sends, so script calls are the round trips.
fn assert_only_script_commands(redis: &RedisServer) {
    const IN_SCRIPTS: [&str; 7] = ["hmget", "pttl", "incr", "pexpire", "hset", "del", "hget"];
    for line in redis.cli(&["INFO", "commandstats"]).lines() {
        let Some(name) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split(':').next())
        else {
            continue;
        };
        assert!(
            name.starts_with("eval")
                || name.starts_with("config")
                || name == "info"
                || IN_SCRIPTS.contains(&name),
            "a command outside the scripts reached Redis: {line}"
        );
    }
}

#[tokio::test]
async fn first_execution_is_two_round_trips_and_replay_one() {
    let Some(redis) = RedisServer::start_or_skip("round_trips") else {
        return;
    };
    let (app, _) = harness(
        IdempotencyLayer::with_store(store(&redis).await),
        answer(StatusCode::OK, "ok"),
    );
    // Load the scripts once (EVALSHA, NOSCRIPT, then EVAL).
    send(&app, post(Some("warm-up"), "{}")).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(
        redis.command_calls(&["evalsha", "eval"]),
        2,
        "first execution: claim + complete"
    );
    assert_only_script_commands(&redis);
    redis.cli(&["CONFIG", "RESETSTAT"]);
    assert!(send(&app, post(Some(KEY), "{}")).await.replayed());
    assert_eq!(
        redis.command_calls(&["evalsha", "eval"]),
        1,
        "replay: one claim script that returns the record"
    );
    assert_only_script_commands(&redis);
}

#[tokio::test]
async fn redis_down_fails_closed_by_default() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_down_fails_closed") else {
        return;
    };
    let (app, count) = harness(
        IdempotencyLayer::with_store(store(&redis).await),
        answer(StatusCode::OK, "ok"),
    );
    redis.kill();
    let down = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers["content-type"], "application/problem+json");
    assert_eq!(count.get(), 0, "nothing runs without duplicate protection");
    // Back up: the reconnecting store serves again.
    redis.restart();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = send(&app, post(Some(KEY), "{}")).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count.get(), 1);
}

#[tokio::test]
async fn redis_down_fails_open_when_asked() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_down_fails_open") else {
        return;
    };
    let layer =
        IdempotencyLayer::with_store(store(&redis).await).on_store_error(OnStoreError::FailOpen);
    let (app, count) = harness(layer, answer(StatusCode::OK, "ok"));
    redis.kill();
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, post(Some(KEY), "{}")).await.status,
        StatusCode::OK
    );
    assert_eq!(count.get(), 2, "ran without idempotency");
}

#[tokio::test]
async fn redis_release_frees_a_dropped_claim() {
    let Some(redis) = RedisServer::start_or_skip("redis_dropped_future_releases") else {
        return;
    };
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let handler: Handler = Arc::new(move |_req, n| {
        let g = g.clone();
        Box::pin(async move {
            if n == 0 {
                g.notified().await;
            }
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    });
    let layer = IdempotencyLayer::with_store(store(&redis).await).on_cancel(OnCancel::Release);
    let (app, count) = harness(layer, handler);
    let first = crate::common::call(&app, post(Some(KEY), "{}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), first)
            .await
            .is_err()
    );
    assert_eq!(count.get(), 1);
    // The release runs on a task of its own: give it a moment (real time,
    // Redis is real), then the retry runs.
    let mut retry = send(&app, post(Some(KEY), "{}")).await;
    for _ in 0..20 {
        if retry.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        retry = send(&app, post(Some(KEY), "{}")).await;
    }
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body, "call 1");
    assert_eq!(count.get(), 2);
}
