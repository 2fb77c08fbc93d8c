//! The Redis store on a private redis-server: shared between instances,
//! exact under concurrency, on the server's clock, reloading its script,
//! bounded and recovering when Redis dies.

use std::time::Duration;

use http::{Request, StatusCode};
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{Limits, OnStoreError, Quota, RateLimitLayer, RedisStore, Store};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::nz;
use crate::support::RedisServer;

/// Sends one request and returns how long the answer took.
async fn call<S>(svc: &S, status: StatusCode) -> Duration
where
    S: tower::Service<Request<()>, Response = http::Response<bytes::Bytes>> + Clone,
    S::Error: std::fmt::Debug,
{
    let started = Instant::now();
    let resp = svc.clone().oneshot(Request::new(())).await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), status);
    took
}

/// A store with a generous bound: these tests check counts, not latency,
/// on a machine that may be busy.
async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let Some(redis) = RedisServer::start_or_skip("redis_store_keeps_the_contract") else {
        return;
    };
    crate::contract::contract(store(&redis).await, "contract").await;
    // Without the deny cache too: every decision then goes to Redis.
    crate::contract::contract(store(&redis).await.deny_cache(false), "no-cache").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_under_concurrency_allow_exactly_the_burst_then_refill() {
    let Some(redis) = RedisServer::start_or_skip("two_instances_allow_exactly_the_burst") else {
        return;
    };
    let (a, b) = (store(&redis).await, store(&redis).await);
    // One cell every 2 s: the burst below finishes long before a refill.
    let limits = Limits::new([Quota::with_interval(Duration::from_secs(2))
        .unwrap()
        .burst(nz(20))]);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (s, limits) = (
            if i % 2 == 0 { a.clone() } else { b.clone() },
            limits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            s.check("shared", &limits, 1).await.unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap().is_allowed());
    }
    assert_eq!(allowed, 20);

    let denied = b.check("shared", &limits, 1).await.unwrap();
    assert!(!denied.is_allowed());
    assert!(denied.retry_after() <= Duration::from_secs(2));
    // Both instances agree on when the next cell comes back.
    let other = a.check("shared", &limits, 1).await.unwrap();
    assert!(other.retry_after().abs_diff(denied.retry_after()) < Duration::from_millis(500));
    tokio::time::sleep(denied.retry_after() + Duration::from_millis(20)).await;
    let results = futures::future::join_all((0..10).map(|i| {
        let (s, limits) = (
            if i % 2 == 0 { a.clone() } else { b.clone() },
            limits.clone(),
        );
        async move { s.check("shared", &limits, 1).await.unwrap().is_allowed() }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|a| **a).count(),
        1,
        "one cell came back"
    );
}

#[test]
fn instances_with_skewed_local_clocks_agree() {
    let Some(redis) = RedisServer::start_or_skip("instances_with_skewed_local_clocks_agree") else {
        return;
    };
    let url = redis.url();
    let limits = Limits::new([Quota::with_interval(Duration::from_secs(10))
        .unwrap()
        .burst(nz(5))]);
    // Each instance gets its own runtime; one runs an hour ahead.
    let run = |skew: Duration, url: String, limits: Limits| {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tokio::time::pause();
                tokio::time::advance(skew).await;
                tokio::time::resume();
                let s = RedisStore::connect(&url)
                    .await
                    .unwrap()
                    .deny_cache(false)
                    .timeout(Duration::from_secs(5));
                let mut out = Vec::new();
                for _ in 0..6 {
                    out.push(s.check("skew", &limits, 1).await.unwrap());
                }
                out
            })
        })
    };
    let ahead = run(Duration::from_secs(3600), url.clone(), limits.clone());
    let normal = run(Duration::ZERO, url, limits.clone());
    let (ahead, normal) = (ahead.join().unwrap(), normal.join().unwrap());
    let allowed = ahead
        .iter()
        .chain(&normal)
        .filter(|d| d.is_allowed())
        .count();
    assert_eq!(allowed, 5, "one count across both clocks");
    let waits: Vec<_> = ahead
        .iter()
        .chain(&normal)
        .filter(|d| !d.is_allowed())
        .map(|d| d.retry_after())
        .collect();
    for w in &waits {
        assert!(
            *w > Duration::from_secs(9) && *w <= Duration::from_secs(10),
            "{waits:?}"
        );
    }
}

#[tokio::test]
async fn keys_are_hash_tagged_and_expire() {
    let Some(redis) = RedisServer::start_or_skip("keys_are_hash_tagged_and_expire") else {
        return;
    };
    let s = store(&redis).await;
    let limits = Limits::new([
        Quota::per_minute(nz(10)),
        Quota::per_hour(nz(100)).named("hour"),
    ])
    .namespaced("orders");
    assert!(
        s.check("ip:192.0.2.1", &limits, 1)
            .await
            .unwrap()
            .is_allowed()
    );
    let keys = s.keys("ip:192.0.2.1", &limits);
    assert_eq!(
        keys,
        [
            "palisade:rl:orders:{ip:192.0.2.1}:default:6000000:10",
            // A named quota is found by its name alone.
            "palisade:rl:orders:{ip:192.0.2.1}:hour"
        ]
    );
    let slots: Vec<String> = keys
        .iter()
        .map(|k| redis.cli(&["CLUSTER", "KEYSLOT", k]))
        .collect();
    assert_eq!(slots[0], slots[1], "one slot for one decision");
    let ttl0: u64 = redis.cli(&["PTTL", &keys[0]]).parse().unwrap();
    let ttl1: u64 = redis.cli(&["PTTL", &keys[1]]).parse().unwrap();
    assert!(
        ttl0 > 3_000 && ttl0 <= 6_000,
        "full again after one interval: {ttl0}"
    );
    assert!(ttl1 > 33_000 && ttl1 <= 36_000, "{ttl1}");
    // Every key the store writes has a TTL: none without.
    let all = redis.cli(&["KEYS", "*"]);
    for key in all.lines() {
        assert_ne!(redis.cli(&["PTTL", key]), "-1", "{key} has no TTL");
    }
    // A denial writes nothing.
    let one = Limits::new([Quota::per_hour(nz(1))]);
    assert!(s.check("d", &one, 1).await.unwrap().is_allowed());
    let key = &s.keys("d", &one)[0];
    let before = redis.cli(&["GET", key]);
    assert!(
        !s.clone()
            .deny_cache(false)
            .check("d", &one, 1)
            .await
            .unwrap()
            .is_allowed()
    );
    assert_eq!(redis.cli(&["GET", key]), before);
}

#[tokio::test]
async fn script_flush_mid_run_reloads_the_script() {
    let Some(redis) = RedisServer::start_or_skip("script_flush_mid_run_reloads_the_script") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let limits = Limits::new([Quota::per_hour(nz(5))]);
    for _ in 0..3 {
        assert!(s.check("f", &limits, 1).await.unwrap().is_allowed());
    }
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    let d = s.check("f", &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 1, "the count went on across the reload");
    let sha = redis::Script::new(include_str!("../../src/rate_limit/store/redis/gcra.lua"))
        .get_hash()
        .to_owned();
    assert_eq!(redis.cli(&["SCRIPT", "EXISTS", &sha]), "1");
    let calls = redis.cli(&["INFO", "commandstats"]);
    assert!(
        calls.contains("cmdstat_evalsha"),
        "decisions go by EVALSHA: {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_answers_within_the_bound_then_recovers() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_killed_mid_traffic") else {
        return;
    };
    let bound = Duration::from_millis(50);
    let s = store(&redis).await.timeout(bound);
    let quota = Quota::with_interval(Duration::from_secs(3600))
        .unwrap()
        .burst(nz(3));
    let svc = |policy| {
        ServiceBuilder::new()
            .layer(ProblemLayer::new())
            .layer(
                RateLimitLayer::with_store(s.clone(), quota.clone())
                    .on_store_error(policy)
                    .namespace(format!("{policy:?}")),
            )
            .service(service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
            }))
    };
    let (open, closed) = (svc(OnStoreError::FailOpen), svc(OnStoreError::FailClosed));
    call(&open, StatusCode::OK).await;
    call(&closed, StatusCode::OK).await;

    redis.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(call(&open, StatusCode::OK).await);
        slowest = slowest.max(call(&closed, StatusCode::SERVICE_UNAVAILABLE).await);
    }
    // The bound plus scheduling slack on a busy machine; a hang on the dead
    // connection would take seconds.
    assert!(slowest < bound * 6, "slowest decision took {slowest:?}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = ServiceExt::oneshot(closed.clone(), Request::new(()))
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 10 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted Redis is empty: exact again from a fresh bucket (one
    // cell already spent by the probe above).
    for _ in 0..2 {
        call(&closed, StatusCode::OK).await;
    }
    call(&closed, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn the_deny_cache_keeps_a_flood_off_redis_until_the_retry_time() {
    let Some(redis) = RedisServer::start_or_skip("the_deny_cache_keeps_a_flood_off_redis") else {
        return;
    };
    let evalsha = || redis.command_calls(&["evalsha"]);
    let s = store(&redis).await;
    let limits = Limits::new([Quota::with_interval(Duration::from_millis(300))
        .unwrap()
        .burst(nz(2))]);
    for _ in 0..2 {
        assert!(s.check("hot", &limits, 1).await.unwrap().is_allowed());
    }
    let first = s.check("hot", &limits, 1).await.unwrap();
    assert!(!first.is_allowed());
    assert!(!first.is_cached(), "the first denial came from Redis");
    let before = evalsha();
    let mut last = first.retry_after();
    for _ in 0..100 {
        let d = s.check("hot", &limits, 1).await.unwrap();
        assert!(!d.is_allowed());
        assert!(d.is_cached(), "marked as a local denial");
        assert!(d.retry_after() <= last, "the wait counts down");
        last = d.retry_after();
    }
    assert_eq!(evalsha(), before, "denied locally, without Redis");
    // Other keys still go to Redis.
    assert!(s.check("other", &limits, 1).await.unwrap().is_allowed());
    assert_eq!(evalsha(), before + 1);
    // The cached denial never outlasts the real one.
    tokio::time::sleep(first.retry_after()).await;
    assert!(s.check("hot", &limits, 1).await.unwrap().is_allowed());
}

/// Both scripts (one quota; several) against the in-memory GCRA on one
/// random trace: the same verdicts, binding quotas and remaining cells.
/// Intervals are whole hours and microseconds, so the real time the trace
/// takes refills nothing on Redis while the memory store stays at one
/// instant; Redis's resets and waits are then shorter by at most that time.
#[tokio::test]
async fn both_scripts_decide_as_the_memory_store_on_a_random_trace() {
    let Some(redis) = RedisServer::start_or_skip("both_scripts_decide_as_the_memory_store") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let memory = palisade::rate_limit::MemoryStore::new();
    let at = Instant::now();
    let started = std::time::Instant::now();
    // xorshift64*, seeded: a failure replays.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let quota = |rand: &mut dyn FnMut(u64) -> u64| {
        let ms = 3_600_000 + rand(4) * 900_000 + rand(1_000);
        Quota::with_interval(Duration::from_millis(ms))
            .unwrap()
            .burst(nz(1 + rand(6) as u32))
    };
    let mut sets = Vec::new();
    for n in [1, 1, 2, 3] {
        let quotas: Vec<Quota> = (0..n).map(|_| quota(&mut rand)).collect();
        sets.push(Limits::new(quotas).namespaced(format!("set{}", sets.len())));
    }
    let (mut allowed, mut denied) = (0, 0);
    for step in 0..400 {
        let limits = &sets[rand(sets.len() as u64) as usize];
        let key = format!("k{}", rand(5));
        let cost = rand(8) as u32;
        let want = memory.check_at(&key, limits, cost, at);
        let got = s.check(&key, limits, cost).await.unwrap();
        let ctx = format!("step {step}: {key} cost {cost} under {limits:?}: {got:?} != {want:?}");
        assert_eq!(got.is_allowed(), want.is_allowed(), "{ctx}");
        assert_eq!(got.quota(), want.quota(), "{ctx}");
        assert_eq!(got.remaining(), want.remaining(), "{ctx}");
        let slack = started.elapsed() + Duration::from_millis(5);
        for (g, w) in [
            (got.reset(), want.reset()),
            (got.retry_after(), want.retry_after()),
        ] {
            assert!(g <= w && w - g <= slack, "{ctx}");
        }
        if got.is_allowed() {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    assert!(
        allowed > 50 && denied > 50,
        "{allowed} allowed, {denied} denied"
    );
}

/// The one-quota script's keys: a TTL that ends when the bucket is full
/// again, from a fresh bucket and from one already in use; a TAT left in
/// the past is a full bucket; a request costlier than the burst is denied
/// and writes nothing.
#[tokio::test]
async fn the_one_quota_script_sets_ttls_reads_stale_tats_and_denies_without_writing() {
    let Some(redis) = RedisServer::start_or_skip("the_one_quota_script") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let limits = Limits::new([Quota::per_minute(nz(10)).burst(nz(5))]);
    let key = &s.keys("t", &limits)[0];
    let pttl = || -> u64 { redis.cli(&["PTTL", key]).parse().unwrap() };
    let d = s.check("t", &limits, 2).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!((d.remaining(), d.reset()), (3, Duration::from_secs(12)));
    let ttl = pttl();
    assert!(ttl > 11_000 && ttl <= 12_000, "two cells of 6 s: {ttl}");
    let d = s.check("t", &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 2);
    let ttl = pttl();
    assert!(ttl > 17_000 && ttl <= 18_000, "three cells: {ttl}");

    // Ten minutes ago, and no TTL: Redis treats it as a full bucket.
    let time = redis.cli(&["TIME"]);
    let mut parts = time.lines().map(|l| l.parse::<u64>().unwrap());
    let now = parts.next().unwrap() * 1_000_000 + parts.next().unwrap();
    let past = (now - 600_000_000).to_string();
    assert_eq!(redis.cli(&["SET", key, &past]), "OK");
    let d = s.check("t", &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!((d.remaining(), d.reset()), (4, Duration::from_secs(6)));
    let ttl = pttl();
    assert!(ttl > 5_000 && ttl <= 6_000, "one cell from now: {ttl}");

    let before = redis.cli(&["GET", key]);
    let d = s.check("t", &limits, 6).await.unwrap();
    assert!(!d.is_allowed(), "6 cells never fit a bucket of 5");
    assert_eq!(d.remaining(), 4);
    assert_eq!(redis.cli(&["GET", key]), before, "a denial writes nothing");
    let fresh = s.check("never", &limits, 6).await.unwrap();
    assert!(!fresh.is_allowed());
    assert_eq!(
        fresh.retry_after(),
        Duration::from_secs(6),
        "one cell short"
    );
    assert_eq!(redis.cli(&["EXISTS", &s.keys("never", &limits)[0]]), "0");
}

/// 300 concurrent decisions on 5 keys (one of them with cost 3), once
/// batched and once each alone: the same exact counts either way, TTLs
/// that end when each bucket is full again, and batching carried many
/// decisions per script call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_decisions_are_as_exact_as_lone_ones() {
    let Some(redis) = RedisServer::start_or_skip("batched_decisions_are_as_exact") else {
        return;
    };
    let batch_sha = redis::Script::new(include_str!(
        "../../src/rate_limit/store/redis/gcra_batch.lua"
    ))
    .get_hash()
    .to_owned();
    for batching in [true, false] {
        let s = store(&redis).await.deny_cache(false).batching(batching);
        let limits = Limits::new([Quota::with_interval(Duration::from_secs(2))
            .unwrap()
            .burst(nz(20))])
        .namespaced(format!("batching-{batching}"));
        assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let (s, limits) = (s.clone(), limits.clone());
                tokio::spawn(async move {
                    let (key, cost) = (i % 5, if i % 5 == 4 { 3 } else { 1 });
                    let d = s.check(&format!("k{key}"), &limits, cost).await.unwrap();
                    (key, d.is_allowed())
                })
            })
            .collect();
        let mut allowed = [0; 5];
        for t in tasks {
            let (key, ok) = t.await.unwrap();
            allowed[key] += usize::from(ok);
        }
        assert_eq!(
            allowed,
            [20, 20, 20, 20, 6],
            "batching {batching}: 20 cells per key, 3 per costly request"
        );
        for (key, cells) in [("k0", 20), ("k4", 18)] {
            let ttl: u64 = redis
                .cli(&["PTTL", &s.keys(key, &limits)[0]])
                .parse()
                .unwrap();
            let full = cells * 2_000;
            assert!(
                ttl <= full && ttl > full - 1_500,
                "batching {batching}: {key} is full again in {ttl} ms, not {full}"
            );
        }
        let sent = redis.command_calls(&["evalsha", "eval"]);
        if batching {
            assert!(sent < 200, "300 decisions in {sent} script calls");
            assert_eq!(redis.cli(&["SCRIPT", "EXISTS", &batch_sha]), "1");
        } else {
            assert_eq!(sent, 300, "each decision alone");
        }
    }
}

/// The batch script takes the parameters once when every decision shares
/// them, and once per decision otherwise: the same decisions (on one
/// reading of the clock, so exact), the same TATs and the same TTLs either
/// way, a later decision on a key seeing what an earlier one spent.
#[tokio::test]
async fn the_batch_script_decides_alike_with_shared_or_per_decision_parameters() {
    let Some(redis) = RedisServer::start_or_skip("the_batch_script_decides_alike") else {
        return;
    };
    let script = include_str!("../../src/rate_limit/store/redis/gcra_batch.lua");
    // Cost * interval 1 s, tolerance minus that 1.5 s: a fresh bucket takes
    // two decisions, the third is denied 0.5 s short (-1 - d, d = 2 s).
    let (inc, room) = ("1000000", "1500000");
    let mut tats = Vec::new();
    for (form, per_decision) in [("shared", false), ("each", true)] {
        let (a, b) = (format!("{form}:{{a}}"), format!("{form}:{{b}}"));
        let keys = [a.as_str(), b.as_str(), a.as_str(), a.as_str()];
        let mut args = vec!["EVAL", script, "4"];
        args.extend(keys);
        for _ in 0..if per_decision { keys.len() } else { 1 } {
            args.extend([inc, room]);
        }
        let reply: Vec<i64> = redis
            .cli(&args)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(reply, [0, 0, 1_000_000, -2_000_001], "{form}");
        let tat = |key: &str| redis.cli(&["GET", key]).parse::<i64>().unwrap();
        let pttl = |key: &str| redis.cli(&["PTTL", key]).parse::<i64>().unwrap();
        assert_eq!(tat(&a) - tat(&b), 1_000_000, "{form}: a spent two cells");
        assert!((1_900..=2_000).contains(&pttl(&a)), "{form}: {}", pttl(&a));
        assert!((900..=1_000).contains(&pttl(&b)), "{form}: {}", pttl(&b));
        tats.push(tat(&a) - tat(&b));
    }
    assert_eq!(tats[0], tats[1]);
}

/// Decisions dropped while queued (their callers gave up) are never sent,
/// and leave no slot taken: the next decision goes at once.
#[tokio::test]
async fn decisions_dropped_while_queued_are_not_sent_and_hold_nothing() {
    let Some(redis) = RedisServer::start_or_skip("decisions_dropped_while_queued") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let limits = Limits::new([Quota::per_hour(nz(100))]);
    // Loads the script, so that each decision below is one EVALSHA.
    s.check("warm-up", &limits, 1).await.unwrap();
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    // Two decisions out (every slot taken), then fifty that queue and are
    // dropped.
    let mut out: Vec<_> = (0..2)
        .map(|_| tokio_test::task::spawn(s.check("k", &limits, 1)))
        .collect();
    for d in &mut out {
        assert!(d.poll().is_pending());
    }
    for _ in 0..50 {
        let mut queued = tokio_test::task::spawn(s.check("k", &limits, 1));
        assert!(queued.poll().is_pending());
    }
    for d in out {
        assert!(d.await.unwrap().is_allowed());
    }
    let next = tokio::time::timeout(Duration::from_secs(1), s.check("k", &limits, 1))
        .await
        .expect("a slot leaked: the decision queued behind nothing")
        .unwrap();
    assert_eq!(next.remaining(), 97, "only the three decisions ran");
    assert_eq!(redis.command_calls(&["evalsha"]), 3);
}

/// Redis killed under concurrent load: queued decisions answer within the
/// bound too, and once Redis is back batches are exact again (the new
/// server has no scripts: the batch script reloads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_decisions_answer_within_the_bound_when_redis_dies() {
    let Some(mut redis) = RedisServer::start_or_skip("queued_decisions_answer_within_the_bound")
    else {
        return;
    };
    let bound = Duration::from_millis(50);
    let s = store(&redis).await.timeout(bound).deny_cache(false);
    let limits = Limits::new([Quota::with_interval(Duration::from_secs(3600))
        .unwrap()
        .burst(nz(10))]);
    let burst = |s: &RedisStore| {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (s, limits) = (s.clone(), limits.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let d = s.check(&format!("k{}", i % 4), &limits, 1).await;
                    (d.map(|d| d.is_allowed()), started.elapsed())
                })
            })
            .collect();
        futures::future::join_all(tasks)
    };
    redis.kill();
    let mut slowest = Duration::ZERO;
    for result in burst(&s).await {
        let (d, took) = result.unwrap();
        assert!(d.is_err(), "Redis is down: {d:?}");
        slowest = slowest.max(took);
    }
    assert!(slowest < bound * 6, "slowest decision took {slowest:?}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.check("probe", &limits, 1).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = s.timeout(Duration::from_secs(5));
    let mut allowed = 0;
    for result in burst(&s).await {
        allowed += usize::from(result.unwrap().0.unwrap());
    }
    assert_eq!(allowed, 40, "10 cells on each of 4 keys");
}

/// A TAT past 2^63 µs (the slowest quota there is, one cell per 584 years,
/// and a request of 1,000 cells) is stored and read back as a number, so the bucket stays
/// spent: alone and batched. (Formatted as a C `long`, it would wrap to a
/// TAT in the past, a full bucket.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tat_past_2_pow_63_still_denies() {
    let Some(redis) = RedisServer::start_or_skip("a_tat_past_2_pow_63_still_denies") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let limits = Limits::new([Quota::with_interval(Duration::MAX)
        .unwrap()
        .burst(nz(1_000))]);
    assert!(s.check("alone", &limits, 1_000).await.unwrap().is_allowed());
    let d = s.check("alone", &limits, 1_000).await.unwrap();
    assert!(!d.is_allowed(), "{d:?}");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (s, limits) = (s.clone(), limits.clone());
            tokio::spawn(async move { s.check("batched", &limits, 1_000).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap().is_allowed());
    }
    assert_eq!(allowed, 1);
    assert!(
        !s.check("batched", &limits, 1_000)
            .await
            .unwrap()
            .is_allowed()
    );
}

/// How many commands Redis refused with the error `code` (`INFO
/// errorstats`), since it started or since `CONFIG RESETSTAT`.
fn errors(redis: &RedisServer, code: &str) -> u64 {
    let prefix = format!("errorstat_{code}:count=");
    redis
        .cli(&["INFO", "errorstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Behind one address that enforces cluster slots (a Redis Cluster proxy, a
/// serverless endpoint; here one cluster node that owns every slot), reached
/// as a plain Redis: the first batch with keys of several slots is refused
/// with `CROSSSLOT` and sent again by slot, so none of its decisions fails;
/// from then on batches keep to one slot, so under load no call is refused
/// again and no decision fails (which fail-closed would answer 503, and
/// fail-open with a pass), every key allows exactly its burst, and
/// batching still carries several decisions per script call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_to_one_slot_behind_a_slot_enforcing_endpoint() {
    let Some(redis) = RedisServer::start_slot_enforcing_or_skip("batches_keep_to_one_slot") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let quota = Quota::with_interval(Duration::from_secs(3600))
        .unwrap()
        .burst(nz(5));

    // Two decisions out (every round trip taken; Redis paused, so neither
    // can come back yet), fifty on keys of many slots queued behind them:
    // they go as one batch, which is refused once.
    let limits = Limits::new([quota.clone()]).namespaced("learn");
    let keys: Vec<String> = (0..52).map(|i| format!("k{i}")).collect();
    redis.pause();
    let mut out: Vec<_> = keys[..2]
        .iter()
        .map(|key| tokio_test::task::spawn(s.check(key, &limits, 1)))
        .collect();
    for d in &mut out {
        assert!(d.poll().is_pending());
    }
    let mut queued: Vec<_> = keys[2..]
        .iter()
        .map(|key| tokio_test::task::spawn(s.check(key, &limits, 1)))
        .collect();
    for d in &mut queued {
        assert!(d.poll().is_pending());
    }
    redis.resume();
    for d in out.into_iter().chain(queued) {
        let d = d.await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (true, 4), "{d:?}");
    }
    assert_eq!(errors(&redis, "CROSSSLOT"), 1, "one batch was refused");

    let svc = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(
            RateLimitLayer::with_store(s, quota)
                .per(|req: &Request<()>| Some(req.uri().path().to_owned()))
                .on_store_error(OnStoreError::FailClosed),
        )
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
        }));
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    const KEYS: usize = 40;
    let tasks: Vec<_> = (0..1200)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let uri = format!("/k{}", i % KEYS);
                let req = Request::builder().uri(uri).body(()).unwrap();
                (i % KEYS, svc.oneshot(req).await.unwrap().status())
            })
        })
        .collect();
    let mut allowed = [0; KEYS];
    let mut other = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (key, StatusCode::OK) => allowed[key] += 1,
            (_, StatusCode::TOO_MANY_REQUESTS) => {}
            (key, status) => other.push((key, status)),
        }
    }
    assert_eq!(errors(&redis, "CROSSSLOT"), 0, "no batch refused again");
    assert!(
        other.is_empty(),
        "{} store errors answered 503: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(allowed, [5; KEYS], "5 cells per key");
    let calls = redis.command_calls(&["evalsha", "eval"]);
    assert!(calls < 1000, "1200 decisions in {calls} script calls");
}

/// Buckets so slow that their TATs are numbers Lua formats with an
/// exponent (the slowest quota there is, one cell per 584 years, and
/// requests of 10 cells: 1.8e17 µs each): every script, the one for several
/// quotas too, writes TATs and TTLs as plain integers, alone and batched,
/// and the buckets count exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_writes_slow_buckets_as_integers() {
    let Some(redis) = RedisServer::start_or_skip("every_script_writes_slow_buckets") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let slowest = Quota::with_interval(Duration::MAX).unwrap();
    let sets = [
        Limits::new([slowest.clone().burst(nz(40))]).namespaced("one"),
        Limits::new([
            slowest.clone().burst(nz(40)),
            slowest.clone().burst(nz(60)).named("deeper"),
            Quota::per_hour(nz(1000)).named("hour"),
        ])
        .namespaced("many"),
    ];
    let integers = |keys: Vec<String>| {
        for key in keys {
            let tat = redis.cli(&["GET", &key]);
            assert!(tat.parse::<u64>().is_ok(), "{key}: TAT {tat:?}");
            let ttl = redis.cli(&["PTTL", &key]);
            assert!(ttl.parse::<u64>().is_ok_and(|t| t > 0), "{key}: PTTL {ttl}");
        }
    };
    for limits in &sets {
        for i in 0..6 {
            let d = s.check("k", limits, 10).await.unwrap();
            assert_eq!(d.is_allowed(), i < 4, "{limits:?}, decision {i}: {d:?}");
        }
        integers(s.keys("k", limits));
    }
    // Batched: concurrent one-quota decisions go through the batch script.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (s, limits) = (s.clone(), sets[0].clone());
            tokio::spawn(async move { s.check("b", &limits, 10).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap().is_allowed());
    }
    assert_eq!(allowed, 4);
    integers(s.keys("b", &sets[0]));
}

/// Per-client keys on a plain Redis (64 callers over 5,000 keys, hardly two
/// of them in one hash slot): queued decisions still go many to a script
/// call, so batching saves Redis work instead of one call per decision
/// plus a wait; each key allows exactly its burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_distinct_keys_go_in_few_script_calls() {
    let Some(redis) = RedisServer::start_or_skip("batches_of_distinct_keys") else {
        return;
    };
    let s = store(&redis).await.deny_cache(false);
    let limits = Limits::new([Quota::with_interval(Duration::from_secs(3600))
        .unwrap()
        .burst(nz(1))]);
    // Loads both scripts, so that each call below is one EVALSHA.
    s.check("warm-up", &limits, 1).await.unwrap();
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    const KEYS: usize = 5_000;
    const DECISIONS: usize = 7_500;
    const CALLERS: usize = 64;
    // Caller `c` decides `c`, `c + 64`, ...: keys below 2,500 twice.
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (s, limits) = (s.clone(), limits.clone());
            tokio::spawn(async move {
                let mut allowed = Vec::new();
                for n in (c..DECISIONS).step_by(CALLERS) {
                    let d = s.check(&format!("client-{}", n % KEYS), &limits, 1).await;
                    if d.unwrap().is_allowed() {
                        allowed.push(n % KEYS);
                    }
                }
                allowed
            })
        })
        .collect();
    let mut allowed = vec![0; KEYS];
    for t in tasks {
        for key in t.await.unwrap() {
            allowed[key] += 1;
        }
    }
    assert!(allowed.iter().all(|&n| n == 1), "one cell per key");
    let calls = redis.command_calls(&["evalsha", "eval"]);
    assert!(
        calls * 10 < DECISIONS as u64 * 6,
        "{DECISIONS} decisions in {calls} script calls"
    );
}
