//! Exactly once under hang-ups, lost replies and failover: two demo
//! instances, each with its own state and its own order repository, share
//! one redis-server 15 ms away each way (through a [`FaultProxy`]) and one
//! payment provider 40 ms away (a third instance's fake). Clients hang up on
//! `POST /orders` at random moments and retry patiently on the other
//! instance; then Redis is cut for 3 s and restored.
//!
//! The provider would charge a payment key once whatever it is sent, so the
//! test counts what it is sent: the handlers' payment steps and the
//! provider's attempts must both equal the keys, with no extra run for the
//! provider to dedupe.
//!
//! Real sockets and a real Redis round trip are the point here, so this
//! test runs on real time; its bounds about time are generous, its counts
//! exact. `ORDER_API_FAULT_SEED` replays a run's hang-up plan.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::{self, Reply, TestApp, order_body};
use crate::proxy::FaultProxy;
use crate::support::RedisServer;

/// Keys ordered with a hang-up.
const KEYS: usize = 120;
/// Clients at once: enough to load both instances, few enough for 2 cores.
const CLIENTS: usize = 12;
/// Between Redis and each instance, each way.
const REDIS_LATENCY: Duration = Duration::from_millis(15);
/// The payment provider's answer takes this long.
const PAYMENT_LATENCY_MS: u64 = 40;
/// A patient client retries this often (it ignores `Retry-After`, so the
/// test sees how long a key really answers `409`).
const RETRY_EVERY: Duration = Duration::from_millis(25);
/// Retries stop this long after the hang-up (a failure by then).
const GIVE_UP: Duration = Duration::from_secs(5);
/// How long Redis is cut.
const CUT: Duration = Duration::from_secs(3);
/// The longest a `POST` may take to answer `503` while Redis is cut.
const CUT_ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Each instance answers `201` again within this of the restore.
const RECOVER_WITHIN: Duration = Duration::from_secs(5);
/// The caller of every order: one scope, one rate-limit bucket.
const CALLER: &str = "fault-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_and_failover_run_each_payment_once() {
    let Some(redis) = RedisServer::start_or_skip("hang_ups_and_failover") else {
        return;
    };
    let seed = std::env::var("ORDER_API_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (ORDER_API_FAULT_SEED={seed} replays the hang-up plan)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let proxy = FaultProxy::start(redis.port()).await;
    proxy.set_latency(REDIS_LATENCY);
    let provider = TestApp::start().await;
    // A provider 40 ms away: long enough for hang-ups to land mid-payment.
    provider
        .set_faults(serde_json::json!({"payment": {"latency_ms": PAYMENT_LATENCY_MS}}))
        .await;
    let payment_url = format!("{}/fake/payments", provider.base);
    let instance = || {
        let (redis_url, payment_url) = (proxy.url(), payment_url.clone());
        TestApp::start_with(move |c| {
            c.redis_url = Some(redis_url);
            c.payment_url = Some(payment_url);
            // The rate limit stays in the path (a Redis call per request) but
            // never refuses the test's patient retries.
            c.rate_limit_per_second = NonZeroU32::new(100_000).unwrap();
            c.rate_limit_burst = NonZeroU32::new(100_000).unwrap();
        })
    };
    let apps = [instance().await, instance().await];
    let failed_open_before = rate_limit_failed_open(&apps[0]).await;

    // ---- how long a first run takes, under the same load -----------------
    let warm_up: Vec<(usize, String, Duration, Reply)> =
        futures::stream::iter((0..2 * CLIENTS).map(|i| {
            let (app, key) = (&apps[i % 2], format!("warm-{seed}-{i}"));
            async move {
                let sent = Instant::now();
                let reply = post(app, &key, &body_of(i)).await;
                (i % 2, key, sent.elapsed(), reply)
            }
        }))
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let mut problems = Vec::new();
    let mut order_on = [None, None];
    for (app, key, _, reply) in &warm_up {
        if reply.status == StatusCode::CREATED {
            order_on[*app] = reply.json()["id"].as_str().map(str::to_owned);
        } else {
            problems.push(format!("{key}: warm-up answered {}", reply.status));
        }
    }
    let first_run = warm_up.iter().map(|w| w.2).max().unwrap();
    // Generous for a loaded box: twice the slowest first run, plus 1 s.
    let conflict_bound = 2 * first_run + Duration::from_secs(1);

    // ---- hang-ups, then patient retries on the other instance --------------
    // The seed picks each key's first instance and its hang-up moment, as a
    // share of the slowest first run.
    let plan: Vec<(usize, Duration)> = (0..KEYS)
        .map(|_| (rng.usize(0..2), first_run.mul_f64(rng.f64())))
        .collect();
    let runs: Vec<KeyRun> =
        futures::stream::iter(plan.iter().enumerate().map(|(i, &(first, delay))| {
            let key = format!("key-{seed}-{i}");
            order_with_a_hang_up(&apps, first, key, body_of(i), delay)
        }))
        .buffer_unordered(CLIENTS)
        .collect()
        .await;

    let hang_ups = runs.iter().filter(|r| r.hung_up).count();
    let longest_conflict = runs.iter().filter_map(|r| r.conflict_window).max();
    let conflicts: usize = runs.iter().map(|r| r.conflicts).sum();
    let unavailable: usize = runs.iter().map(|r| r.unavailable).sum();
    // Most hang-ups land before the answer (about half of them, on a quiet
    // box or a loaded one alike: the moments scale with the first run); a
    // run with few would prove little.
    if hang_ups < KEYS / 5 {
        problems.push(format!("only {hang_ups} of {KEYS} orders were hung up on"));
    }
    let mut payment_ids = std::collections::HashSet::new();
    for run in &runs {
        problems.extend(run.problems.iter().map(|p| format!("{}: {p}", run.key)));
        if let Some(window) = run.conflict_window.filter(|w| *w > conflict_bound) {
            problems.push(format!(
                "{}: 409 {window:?} after the hang-up (bound {conflict_bound:?})",
                run.key
            ));
        }
        if let Some(id) = run.payment_id.clone() {
            payment_ids.insert(id);
        }
    }
    let paid = runs.iter().filter(|r| r.payment_id.is_some()).count();
    if payment_ids.len() != paid {
        problems.push(format!(
            "{} distinct payment ids for {paid} keys answered 201",
            payment_ids.len()
        ));
    }
    let keys = (warm_up.len() + runs.len()) as u64;
    let counts = Counts::of(&apps, &provider).await;
    println!(
        "hang-ups: keys {keys} ({KEYS} with a hang-up plan), hang-ups {hang_ups}, \
         payment steps {} (a {}, b {}), provider attempts {}, charges {}, \
         409s {conflicts}, 503s {unavailable}, longest 409 window after a hang-up {longest_conflict:?} \
         (bound {conflict_bound:?}, first run up to {first_run:?}), \
         keys unresolved after {GIVE_UP:?}: {}",
        counts.steps[0] + counts.steps[1],
        counts.steps[0],
        counts.steps[1],
        counts.attempts,
        counts.charges,
        runs.iter().filter(|r| r.payment_id.is_none()).count(),
    );
    counts.expect(keys, "after the hang-ups", &mut problems);
    let failed_open = rate_limit_failed_open(&apps[0]).await - failed_open_before;
    println!(
        "rate limit: {failed_open} decisions failed open while Redis was up (this test \
         binary's instances together)"
    );

    // ---- Redis cut for 3 s --------------------------------------------------
    let before_cut = keys;
    proxy.cut();
    let cut_at = Instant::now();
    let mut cut_keys = Vec::new();
    let (mut answered_503, mut reads) = (0, 0);
    let (mut slowest_503, mut slowest_read) = (Duration::ZERO, Duration::ZERO);
    let mut round = 0;
    while cut_at.elapsed() < CUT {
        for (n, app) in apps.iter().enumerate() {
            let key = format!("cut-{seed}-{n}-{round}");
            let sent = Instant::now();
            let reply = post(app, &key, &body_of(round)).await;
            let took = sent.elapsed();
            slowest_503 = slowest_503.max(took);
            if reply.status != StatusCode::SERVICE_UNAVAILABLE || took > CUT_ANSWER_WITHIN {
                problems.push(format!(
                    "{key}: Redis cut, POST answered {} after {took:?}",
                    reply.status
                ));
            } else {
                answered_503 += 1;
            }
            cut_keys.push((n, key, round));
            let mut paths = vec![format!("/products/{}", round % 100 + 1)];
            paths.extend(order_on[n].iter().map(|id| format!("/orders/{id}")));
            for path in paths {
                let sent = Instant::now();
                let reply = get(app, &path).await;
                slowest_read = slowest_read.max(sent.elapsed());
                if reply.status == StatusCode::OK {
                    reads += 1;
                } else {
                    problems.push(format!("Redis cut, GET {path} answered {}", reply.status));
                }
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    let restored_at = Instant::now();

    // Every key refused during the cut was not stored: it runs now, on
    // both instances at once, so each one's recovery time is its own.
    let recover = |n: usize| {
        let (app, keys) = (&apps[n], &cut_keys);
        async move {
            let mut first_201 = None;
            let mut problems = Vec::new();
            for (_, key, round) in keys.iter().filter(|(m, ..)| *m == n) {
                loop {
                    let reply = post(app, key, &body_of(*round)).await;
                    if reply.status == StatusCode::CREATED {
                        first_201.get_or_insert(restored_at.elapsed());
                        break;
                    }
                    if reply.status != StatusCode::SERVICE_UNAVAILABLE
                        || restored_at.elapsed() > 2 * RECOVER_WITHIN
                    {
                        problems.push(format!(
                            "{key}: after the restore, POST answered {}",
                            reply.status
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (first_201, problems)
        }
    };
    let ((first_a, problems_a), (first_b, problems_b)) = tokio::join!(recover(0), recover(1));
    problems.extend(problems_a.into_iter().chain(problems_b));
    let recovered = [first_a, first_b];
    for (n, at) in recovered.iter().enumerate() {
        match at {
            Some(at) if *at <= RECOVER_WITHIN => {}
            _ => problems.push(format!(
                "instance {n}: first 201 {at:?} after the restore (bound {RECOVER_WITHIN:?})"
            )),
        }
    }
    let keys = before_cut + cut_keys.len() as u64;
    let counts = Counts::of(&apps, &provider).await;
    println!(
        "Redis cut {CUT:?}: {answered_503} POSTs answered 503 (slowest {slowest_503:?}), \
         {reads} GETs answered 200 (slowest {slowest_read:?}); recovered after the restore in {recovered:?}; \
         keys {keys}, payment steps {}, provider attempts {}, charges {}",
        counts.steps[0] + counts.steps[1],
        counts.attempts,
        counts.charges,
    );
    counts.expect(keys, "after the cut", &mut problems);

    for problem in problems.iter().take(200) {
        println!("problem: {problem}");
    }
    assert!(
        problems.is_empty(),
        "{} problems (seed {seed}), the first: {:?}",
        problems.len(),
        problems.first()
    );
}

/// What happened to one key ordered with a hang-up.
#[derive(Debug, Default)]
struct KeyRun {
    key: String,
    /// The client closed its connection before an answer came.
    hung_up: bool,
    /// `409`s the retries saw.
    conflicts: usize,
    /// `503`s the retries saw (a store step timed out on a loaded box): a
    /// patient client retries them, and they run nothing.
    unavailable: usize,
    /// Answers `201` not marked `Idempotent-Replayed`: at most one per key.
    fresh: usize,
    /// From the hang-up to the sending of the last retry answered `409`.
    conflict_window: Option<Duration>,
    /// The order's payment, once the key answered `201`.
    payment_id: Option<String>,
    problems: Vec<String>,
}

/// Sends the order to `apps[first]` and hangs up after `delay` (unless
/// answered by then), then retries on the other instance until `201`;
/// then checks that both instances replay that answer byte for byte.
async fn order_with_a_hang_up(
    apps: &[TestApp; 2],
    first: usize,
    key: String,
    body: Value,
    delay: Duration,
) -> KeyRun {
    let mut run = KeyRun {
        key,
        ..KeyRun::default()
    };
    let key = run.key.as_str();
    let early = hang_up_after(apps[first].addr, key, &body, delay).await;
    let hung_up_at = Instant::now();
    let mut answer = match early {
        Some(reply) if reply.status == StatusCode::CREATED => Some(reply),
        Some(reply) => {
            run.problems
                .push(format!("first POST answered {}", reply.status));
            None
        }
        None => {
            run.hung_up = true;
            None
        }
    };
    let other = &apps[1 - first];
    while answer.is_none() && hung_up_at.elapsed() < GIVE_UP {
        let sent = Instant::now();
        let reply = post(other, key, &body).await;
        match reply.status {
            StatusCode::CREATED => answer = Some(reply),
            StatusCode::CONFLICT => {
                run.conflicts += 1;
                run.conflict_window = Some(sent - hung_up_at);
            }
            StatusCode::SERVICE_UNAVAILABLE => run.unavailable += 1,
            status => run
                .problems
                .push(format!("retry answered {status}: {}", reply.text())),
        }
        if answer.is_none() {
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
    let Some(answer) = answer else {
        run.problems.push(format!(
            "no 201 within {GIVE_UP:?} of the hang-up ({} 409s)",
            run.conflicts
        ));
        return run;
    };
    if answer.header("idempotent-replayed").is_none() {
        run.fresh += 1;
    }
    run.payment_id = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|order| order["payment_id"].as_str().map(str::to_owned));
    for (n, app) in apps.iter().enumerate() {
        let replay = post(app, key, &body).await;
        let replayed = replay.header("idempotent-replayed");
        if replayed.is_none() {
            run.fresh += 1;
        }
        if replay.status != StatusCode::CREATED
            || replayed.as_deref() != Some("true")
            || replay.body != answer.body
        {
            run.problems.push(format!(
                "instance {n} replayed {} (replayed: {replayed:?}) {} instead of {}",
                replay.status,
                replay.text(),
                answer.text()
            ));
        }
    }
    if run.fresh > 1 {
        run.problems
            .push(format!("{} answers 201 not marked replayed", run.fresh));
    }
    run
}

/// `POST /orders` on a connection of its own, closed after `delay` unless
/// the answer came first: the hang-up happens whatever the request's state
/// (not yet read, body read, handler running, answer on its way).
async fn hang_up_after(
    addr: SocketAddr,
    key: &str,
    body: &Value,
    delay: Duration,
) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let connection = tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/orders")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-api-key", CALLER)
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    let reply = tokio::time::timeout(delay, exchange).await.ok().flatten();
    // Dropping the connection's task closes the socket.
    connection.abort();
    reply
}

async fn post(app: &TestApp, key: &str, body: &Value) -> Reply {
    let body = Full::from(serde_json::to_vec(body).unwrap()).boxed();
    harness::send_with(
        &app.client,
        &app.base,
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
            ("x-api-key", CALLER),
        ],
        body,
    )
    .await
}

async fn get(app: &TestApp, path: &str) -> Reply {
    app.send("GET", path, &[("x-api-key", CALLER)], None).await
}

/// Orders differ, so a replay of the wrong one would show.
fn body_of(i: usize) -> Value {
    order_body(i as u32 % 7 + 1, 100 + i as u64)
}

/// Payment steps per instance, and what the provider saw.
struct Counts {
    steps: [u64; 2],
    attempts: u64,
    charges: u64,
}

impl Counts {
    async fn of(apps: &[TestApp; 2], provider: &TestApp) -> Self {
        let steps = |stats: Value| stats["payment_steps"].as_u64().unwrap();
        let provider = provider.stats().await;
        Self {
            steps: [steps(apps[0].stats().await), steps(apps[1].stats().await)],
            attempts: provider["payment_attempts"].as_u64().unwrap(),
            charges: provider["payments_charged"].as_u64().unwrap(),
        }
    }

    /// One payment step, one provider call and one charge per key.
    fn expect(&self, keys: u64, when: &str, problems: &mut Vec<String>) {
        let steps = self.steps[0] + self.steps[1];
        if (steps, self.attempts, self.charges) != (keys, keys, keys) {
            problems.push(format!(
                "{when}: {keys} keys, but {steps} payment steps, {} provider attempts, {} charges",
                self.attempts, self.charges
            ));
        }
    }
}

/// Rate-limit decisions of the demo's limiter that failed open, in every
/// instance of this process (the metrics recorder is process-wide).
async fn rate_limit_failed_open(app: &TestApp) -> f64 {
    let decisions = "palisade_rate_limit_decisions_total";
    let labels = [("name", "api"), ("outcome", "failed_open")];
    app.metrics().await.value(decisions, &labels)
}
