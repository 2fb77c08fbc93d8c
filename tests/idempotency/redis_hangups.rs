//! Exactly once under hang-ups and lost replies on a real Redis: a claim
//! sent to a server that stopped answering (`kill -STOP`, so the claim lands
//! later and its reply is lost), a hang-up mid-handler and during the
//! completion, a handler that outlives its lease, and scripts given numbers
//! out of range. Real time, kept to a few seconds with generous bounds.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::{Claim, Fingerprint, IdempotencyLayer, OnCancel, RedisStore, Store};
use palisade::key::Global;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::common::{Answer, App, Counter, Handler, answer, call, harness, post, send};
use crate::support::RedisServer;

/// How long after Redis answers again a retry must have its final answer:
/// the layer needs a round trip or two; the rest is slack for a loaded box.
const BOUND: Duration = Duration::from_secs(5);

async fn store(redis: &RedisServer, timeout: Duration) -> RedisStore {
    RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .timeout(timeout)
}

fn layer(store: RedisStore) -> IdempotencyLayer<RedisStore, Global> {
    IdempotencyLayer::with_store(store).per(Global)
}

/// A stopped `redis-server` (SIGSTOP): it accepts bytes but answers
/// nothing until this is dropped (SIGCONT).
struct Stopped(String);

fn stop(redis: &RedisServer) -> Stopped {
    let info = redis.cli(&["INFO", "server"]);
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id in INFO")
        .trim()
        .to_owned();
    signal("-STOP", &pid);
    Stopped(pid)
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// Retries `key` until it is not refused (`409`, `503`), within [`BOUND`].
async fn final_answer(app: &App, key: &str, since: Instant) -> Answer {
    loop {
        let answer = send(app, post(Some(key), "{}")).await;
        if !matches!(
            answer.status,
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE
        ) {
            return answer;
        }
        assert!(
            since.elapsed() < BOUND,
            "{key}: still {} {:?} after Redis answered again",
            answer.status,
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The claim reaches a stopped Redis: one request times out (`503`), one
/// is dropped by its client. Both claims land once Redis runs again; both
/// are released by their tokens, so retries run at once instead of meeting
/// `409` for the 30 s lease.
#[tokio::test]
async fn redis_claims_whose_replies_are_lost_are_released_by_their_tokens() {
    let Some(redis) = RedisServer::start_or_skip("redis_claims_whose_replies_are_lost") else {
        return;
    };
    let store = store(&redis, Duration::from_millis(300)).await;
    let layer = layer(store).lease(Duration::from_secs(30));
    let (app, count) = harness(layer, answer(StatusCode::OK, "ok"));
    send(&app, post(Some("warm-up"), "{}")).await; // scripts loaded
    let stopped = stop(&redis);
    let timed_out = send(&app, post(Some("timed-out"), "{}")).await;
    assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE);
    let hung_up = tokio::time::timeout(
        Duration::from_millis(100),
        call(&app, post(Some("hung-up"), "{}")),
    );
    assert!(hung_up.await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stopped);
    let resumed = Instant::now();
    for key in ["timed-out", "hung-up"] {
        let answer = final_answer(&app, key, resumed).await;
        assert_eq!(answer.status, StatusCode::OK, "{key}");
        assert!(
            !answer.replayed(),
            "{key}: ran now, the lost claim ran nothing"
        );
    }
    assert_eq!(count.get(), 3, "warm-up, then each key once");
}

#[tokio::test]
async fn redis_a_hang_up_mid_handler_runs_it_once_by_default() {
    let Some(redis) = RedisServer::start_or_skip("redis_a_hang_up_mid_handler") else {
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
    let (app, count) = harness(layer(store(&redis, Duration::from_secs(1)).await), handler);
    let hung_up = tokio::time::timeout(
        Duration::from_millis(200),
        call(&app, post(Some("k"), "{}")),
    );
    assert!(hung_up.await.is_err());
    assert_eq!(count.get(), 1);
    assert_eq!(
        send(&app, post(Some("k"), "{}")).await.status,
        StatusCode::CONFLICT
    );
    gate.notify_one();
    let answer = final_answer(&app, "k", Instant::now()).await;
    assert!(answer.replayed(), "{:?}", answer.status);
    assert_eq!(answer.body, "call 0");
    assert_eq!(count.get(), 1, "never a second run");
}

/// The handler stops Redis before it answers, so the completion is sent to
/// a server that does not answer yet, and the client hangs up meanwhile.
/// The completion, on a task of its own, lands once Redis runs again.
#[tokio::test]
async fn redis_a_hang_up_during_the_completion_still_stores_the_response() {
    let Some(redis) = RedisServer::start_or_skip("redis_a_hang_up_during_the_completion") else {
        return;
    };
    let redis = Arc::new(redis);
    let stopped: Arc<Mutex<Option<Stopped>>> = Arc::default();
    let (r, s) = (redis.clone(), stopped.clone());
    let handler: Handler = Arc::new(move |_req, n| {
        if n == 0 {
            *s.lock().unwrap() = Some(stop(&r));
        }
        Box::pin(async move { Response::new(Full::new(Bytes::from(format!("call {n}")))) })
    });
    // Release on cancel: even then, an answered request is never released.
    let layer = layer(store(&redis, Duration::from_secs(3)).await).on_cancel(OnCancel::Release);
    let (app, count): (App, Counter) = harness(layer, handler);
    let hung_up = tokio::time::timeout(
        Duration::from_millis(300),
        call(&app, post(Some("k"), "{}")),
    );
    assert!(
        hung_up.await.is_err(),
        "the completion was waiting for Redis"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stopped.lock().unwrap().take());
    let answer = final_answer(&app, "k", Instant::now()).await;
    assert!(answer.replayed(), "{:?}", answer.status);
    assert_eq!(answer.body, "call 0");
    assert_eq!(count.get(), 1);
}

/// A handler that runs 2.5 leases long keeps its key: the heartbeat renews
/// it every third of the 1 s lease.
#[tokio::test]
async fn redis_a_handler_that_outlives_its_lease_runs_once() {
    let Some(redis) = RedisServer::start_or_skip("redis_a_handler_that_outlives_its_lease") else {
        return;
    };
    let slow: Handler = Arc::new(|_req, n| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    });
    let store = store(&redis, Duration::from_secs(1)).await;
    let (app, count) = harness(layer(store).lease(Duration::from_secs(1)), slow);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(Some("k"), "{}")).await }
    });
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let retry = send(&app, post(Some("k"), "{}")).await;
        assert_eq!(
            retry.status,
            StatusCode::CONFLICT,
            "still running, still held"
        );
    }
    assert_eq!(first.await.unwrap().body, "call 0");
    assert!(send(&app, post(Some("k"), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
}

/// The scripts check their numbers before they write anything: a lease or
/// TTL out of range fails the script and leaves the record as it was.
#[tokio::test]
async fn redis_scripts_refuse_numbers_out_of_range_before_writing() {
    let Some(redis) = RedisServer::start_or_skip("redis_scripts_refuse_numbers") else {
        return;
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let fp = Fingerprint::from_slice(&[1; 32]).unwrap();
    let too_long = u64::MAX.to_string();
    let eval = |script: &'static str, keys: &[&str], args: &[&[u8]]| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len()).arg(keys);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    };
    let claim = include_str!("../../src/idempotency/store/claim.lua");
    let complete = include_str!("../../src/idempotency/store/complete.lua");
    let renew = include_str!("../../src/idempotency/store/renew.lua");
    for lease in [too_long.as_str(), "0", "-5", "1.5", "x"] {
        let refused: redis::RedisResult<redis::Value> = eval(
            claim,
            &["r", "r:fence"],
            &[fp.as_bytes(), b"7", lease.as_bytes(), b"1000"],
        )
        .query_async(&mut conn)
        .await;
        assert!(refused.is_err(), "lease {lease}");
    }
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "a refused claim wrote nothing");

    let s = store(&redis, Duration::from_secs(1)).await;
    let Claim::Claimed(lease) = s.claim("k", &fp, 7, Duration::from_secs(30)).await.unwrap() else {
        panic!("expected a claim");
    };
    let record = s.record_key("k");
    let token = lease.token.to_string();
    let refused: redis::RedisResult<redis::Value> = eval(
        complete,
        &[&record],
        &[
            token.as_bytes(),
            too_long.as_bytes(),
            b"c",
            b"200",
            b"[]",
            b"body",
        ],
    )
    .query_async(&mut conn)
    .await;
    assert!(refused.is_err());
    assert_eq!(redis.cli(&["HGET", &record, "s"]), "i", "still in flight");
    let pttl: u64 = redis.cli(&["PTTL", &record]).parse().unwrap();
    assert!(pttl <= 30_000, "the lease's expiry, untouched: {pttl}");
    let fence = format!("{record}:fence");
    let refused: redis::RedisResult<redis::Value> = eval(
        renew,
        &[&record, &fence],
        &[token.as_bytes(), b"0", b"1000"],
    )
    .query_async(&mut conn)
    .await;
    assert!(refused.is_err());
    // Through the store, the longest durations are clamped, not refused.
    assert!(s.renew("k", 7, Duration::MAX).await.unwrap());
}

/// The store's step bound takes `Duration::MAX` and `ZERO` (clamped to
/// 1 ms .. one minute): requests are answered, nothing panics.
#[tokio::test]
async fn redis_store_timeout_takes_max_and_zero() {
    let Some(redis) = RedisServer::start_or_skip("redis_store_timeout_takes_max_and_zero") else {
        return;
    };
    let longest = store(&redis, Duration::MAX).await;
    assert!(
        format!("{longest:?}").contains("timeout: 60s"),
        "{longest:?}"
    );
    let (app, count) = harness(layer(longest), answer(StatusCode::OK, "ok"));
    assert_eq!(
        send(&app, post(Some("a"), "{}")).await.status,
        StatusCode::OK
    );
    assert!(send(&app, post(Some("a"), "{}")).await.replayed());
    assert_eq!(count.get(), 1);
    let shortest = store(&redis, Duration::ZERO).await;
    assert!(
        format!("{shortest:?}").contains("timeout: 1ms"),
        "{shortest:?}"
    );
    let (app, _) = harness(layer(shortest), answer(StatusCode::OK, "ok"));
    let status = send(&app, post(Some("b"), "{}")).await.status;
    assert!(
        matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE),
        "{status}"
    );
}

/// The client hangs up while its response body is read (after a claim and
/// a handler on a real Redis): the key is completed as not retained, never
/// released, so a retry gets `410` and the handler does not run again. The
/// same body failing mid-stream gives the same.
#[tokio::test]
async fn redis_a_hang_up_or_a_failure_while_the_body_is_read_never_runs_it_again() {
    use palisade::idempotency::Error;
    use tower::ServiceExt;

    let Some(redis) = RedisServer::start_or_skip("redis_a_hang_up_while_the_body_is_read") else {
        return;
    };
    // Release on cancel, so the reading happens in the request's own future
    // and a release there would free the key.
    let layer = layer(store(&redis, Duration::from_secs(1)).await).on_cancel(OnCancel::Release);
    let (svc, count, feeds) = crate::hangups::fed_service(layer);
    let feed = |n: usize| feeds.lock().unwrap()[n].clone();
    let retry_until_final = |key: &'static str| {
        let svc = svc.clone();
        async move {
            let since = Instant::now();
            loop {
                let retry = svc.clone().oneshot(post(Some(key), "{}"));
                // Bounded: a second run would wait for a body nobody feeds.
                let retry = tokio::time::timeout(BOUND, retry)
                    .await
                    .expect("a retry is answered from the record, it does not run again");
                if !matches!(retry, Err(Error::InFlight { .. }) | Err(Error::Store(_))) {
                    return retry;
                }
                assert!(since.elapsed() < BOUND, "{key}: still {retry:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // A hang-up: drive the request until the handler answered, feed half a
    // body, then drop the request.
    let mut first = Box::pin(svc.clone().oneshot(post(Some("hung-up"), "{}")));
    while feeds.lock().unwrap().is_empty() {
        let pending = tokio::time::timeout(Duration::from_millis(10), &mut first).await;
        assert!(pending.is_err(), "answered before its body: {pending:?}");
    }
    feed(0).send(Ok(Bytes::from("half"))).unwrap();
    let pending = tokio::time::timeout(Duration::from_millis(50), &mut first).await;
    assert!(pending.is_err(), "answered before its body ended");
    drop(first);
    let retry = retry_until_final("hung-up").await;
    assert!(matches!(retry, Err(Error::NotRetained)), "410: {retry:?}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A failure: the body breaks off mid-stream.
    let first = tokio::spawn(svc.clone().oneshot(post(Some("failed"), "{}")));
    while feeds.lock().unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    feed(1).send(Ok(Bytes::from("half"))).unwrap();
    feed(1)
        .send(Err("connection to the backend reset".into()))
        .unwrap();
    let response = first.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    assert!(response.into_body().collect().await.is_err());
    let retry = retry_until_final("failed").await;
    assert!(matches!(retry, Err(Error::NotRetained)), "410: {retry:?}");
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one run per key"
    );
}
