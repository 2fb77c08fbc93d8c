//! Throughput of the demo order API with every palisade layer against the
//! same handlers with none, over real HTTP on loopback, 64 connections.
//!
//! ```text
//! cargo bench -p palisade-benches --bench order_api
//! ```
//!
//! One process serves three variants, each on its own loopback port, and
//! drives them in interleaved rounds (bare, full on memory stores, full on
//! Redis stores when `redis-server` is installed), so machine noise hits all
//! of them alike:
//!
//! - **bare**: the demo's handlers (`create_order`, `get_order`,
//!   `get_product`) and fake downstreams, with no server layer, and client
//!   stacks that are only the transport (plus the one line that puts the
//!   payment key in its header). The order body is parsed with plain serde.
//! - **full**: `routes::app`, exactly what `cargo run -p order-api`
//!   serves: request span and counters, rate limit (a quota too large to
//!   refuse, so every request pays for a decision), validation, idempotency,
//!   and client stacks with retry, circuit breaker and timeout.
//!
//! The load is half `POST /orders` (a new key each, so every order runs the
//! handler and a payment over HTTP) and half `GET /products/{id}` (a
//! recommendations query of the repository; `AppState` puts its bulkhead,
//! breaker and timeout in front of it, and the orders bulkhead in front of
//! order queries, in both variants). Every non-2xx answer is counted and
//! reported: a run with errors is not a valid measurement.
//!
//! `ORDER_API_BENCH_SECS` (default 4) sets the length of each measured
//! window; `ORDER_API_BENCH_ROUNDS` (default 3) the number of rounds.
//! `ORDER_API_BENCH_RECORDER=off` keeps the demo's Prometheus recorder out
//! (the layers then record into nothing), to see what recording costs.
//! `ORDER_API_BENCH_PROFILE=<part of a variant's name>` (`bare`, `memory`,
//! `Redis`) drives that variant alone for one window, for a profiler.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::BoxError;
use palisade::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey, IdempotencyKeyLayer};
use palisade::key::CallerKey;
use palisade::validate::Validated;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use order_api::clients::{self, BreakerProbe, BreakerState, PaymentClient};
use order_api::config::Config;
use order_api::errors::ApiError;
use order_api::repository::Repository;
use order_api::state::{AppState, Stores};
use order_api::{faults, routes, server, telemetry};

const CONNECTIONS: usize = 64;

fn config(addr: SocketAddr) -> Config {
    let huge = NonZeroU32::new(1_000_000_000).expect("non-zero");
    Config {
        addr,
        rate_limit_per_second: huge,
        rate_limit_burst: huge,
        ..Config::default()
    }
}

async fn serve(listener: TcpListener, app: Router) {
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
}

/// The demo as `cargo run -p order-api` serves it.
async fn start_full(redis_url: Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = config(addr);
    config.redis_url = redis_url;
    // Every POST is a new key: a run of several windows outgrows the demo's
    // default bound of 100,000 keys, and a full store answers 503.
    config.idempotency_max_keys = std::num::NonZeroUsize::new(10_000_000).unwrap();
    let metrics = telemetry::prometheus().clone();
    let state = server::build_state_with(config, addr, Repository::memory(), metrics)
        .await
        .expect("state");
    serve(listener, routes::app(state)).await;
    format!("http://{addr}")
}

/// `create_order` without the validate layer in front: the body is read
/// and parsed here with plain serde, which the handler needs either way.
/// The handler reads the key and the caller the idempotency layer leaves
/// in the extensions; here they come straight from the headers.
async fn bare_create_order(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let key = parts
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| IdempotencyKey::new(v.to_str().ok()?).ok())
        .ok_or(ApiError::IdempotencyKey("is required"))?;
    let caller = CallerKey::new("bench");
    let bytes = body
        .collect()
        .await
        .map_err(|_| ApiError::BodyRead)?
        .to_bytes();
    let order: routes::CreateOrder =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    routes::create_order(
        State(state),
        Validated(order),
        Some(Extension(key)),
        Some(Extension(caller)),
    )
    .await
}

/// The same handlers and fakes with no layers.
async fn start_bare() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let own = server::own_base_url(addr);
    let client = clients::http_client();
    let transport_only = || {
        clients::Upstream::new(
            ServiceBuilder::new()
                .map_err(BoxError::from)
                // Only puts the payment key the handler chose in its header.
                .layer(IdempotencyKeyLayer::new())
                .service(clients::transport(client.clone())),
        )
    };
    let closed = || BreakerProbe::new(|| BreakerState::Closed);
    let payment = PaymentClient::new(transport_only(), format!("{own}/fake/payments"), closed());
    let state = AppState::new(
        config(addr),
        Repository::memory(),
        payment,
        Stores::Memory,
        telemetry::prometheus().clone(),
        palisade::config::Handles::new(),
    );
    let app = Router::new()
        .route("/orders", post(bare_create_order))
        .route("/orders/{id}", get(routes::get_order))
        .route("/products/{id}", get(routes::get_product))
        .route("/fake/payments", post(faults::fake_payment))
        .with_state(state);
    serve(listener, app).await;
    format!("http://{addr}")
}

type LoadClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Drives `base` with `CONNECTIONS` concurrent clients for `window`;
/// requests per second of 2xx answers, and the number of other answers.
async fn load(client: &LoadClient, base: &str, window: Duration, run: &str) -> (f64, u64) {
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + window;
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "customer_id": "bench",
            "currency": "EUR",
            "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1250},
                      {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 990}],
            "discount_percent": 10,
        }))
        .unwrap(),
    );
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let (client, base, body, counts, run) = (
            client.clone(),
            base.to_owned(),
            body.clone(),
            counts.clone(),
            run.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let request = if n.is_multiple_of(2) {
                    http::Request::post(format!("{base}/orders"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("{run}-{worker}-{n}"))
                        .body(Full::new(body.clone()))
                } else {
                    http::Request::get(format!("{base}/products/{}", 1 + n % 100))
                        .body(Full::default())
                }
                .unwrap();
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        ok
                    }
                    Err(_) => false,
                };
                let counter = if ok { &counts.ok } else { &counts.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    (
        counts.ok.load(Ordering::Relaxed) as f64 / secs,
        counts.failed.load(Ordering::Relaxed),
    )
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let window = Duration::from_secs(env_number("ORDER_API_BENCH_SECS", 4));
    let rounds = env_number("ORDER_API_BENCH_ROUNDS", 3).max(1) as usize;
    if std::env::var("ORDER_API_BENCH_RECORDER").as_deref() == Ok("off") {
        // Taken before the demo installs its Prometheus recorder, which then
        // stays empty: what the layers cost with no recorder to record into.
        metrics::set_global_recorder(metrics::NoopRecorder).expect("the first recorder");
        println!("metrics recorder: none");
    }
    let redis = support::RedisServer::start_or_skip("order_api bench (Redis stores)");
    let mut variants = vec![
        ("bare", start_bare().await, None),
        ("full, memory stores", start_full(None).await, None),
    ];
    if let Some(server) = &redis {
        variants.push((
            "full, Redis stores",
            start_full(Some(server.url())).await,
            Some(server),
        ));
    }
    let client: LoadClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http();
    if let Ok(only) = std::env::var("ORDER_API_BENCH_PROFILE") {
        // One variant alone, one window, for a profiler attached to this
        // process: no other variant's samples in the profile.
        let (name, base, _) = variants
            .iter()
            .find(|(name, ..)| name.contains(only.as_str()))
            .unwrap_or_else(|| panic!("no variant matches {only:?}"));
        let (rps, failed) = load(&client, base, window, "profile").await;
        println!("profile {name}: {rps:.0} req/s ({failed} non-2xx)");
        return;
    }
    println!(
        "order_api: {CONNECTIONS} connections, {} s windows, {rounds} rounds, loopback",
        window.as_secs()
    );
    for (name, base, _) in &variants {
        let (rps, failed) = load(&client, base, Duration::from_secs(1), "warmup").await;
        println!("  warm-up {name:<22} {rps:>9.0} req/s ({failed} non-2xx)");
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let mut line = format!("round {}:", round + 1);
        let mut bare = 0.0;
        for (i, (name, base, server)) in variants.iter().enumerate() {
            let cpu_before = cpu_seconds(*server);
            let (rps, failed) = load(&client, base, window, &format!("r{round}")).await;
            let cpu_us = 1e6 * (cpu_seconds(*server) - cpu_before) / (rps * window.as_secs_f64());
            assert_eq!(
                failed, 0,
                "{name}: {failed} requests failed; not a valid run"
            );
            if i == 0 {
                bare = rps;
                line += &format!("  {name} {rps:.0} req/s {cpu_us:.0} us CPU/req");
            } else {
                line += &format!(
                    "  | {name} {rps:.0} req/s ({:.0}% of bare) {cpu_us:.0} us CPU/req",
                    100.0 * rps / bare
                );
            }
            results[i].push(rps);
            cpu[i].push(cpu_us);
        }
        println!("{line}");
    }
    // The ratio is taken within each round (both sides saw the same
    // machine), then the median of the rounds' ratios.
    println!("median of {rounds} rounds:");
    let per_round = |ratios: &[f64]| {
        ratios
            .iter()
            .map(|r| format!("{r:.1}%"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, (name, ..)) in variants.iter().enumerate() {
        let rps = median(results[i].clone());
        let ratios: Vec<f64> = results[i]
            .iter()
            .zip(&results[0])
            .map(|(r, b)| 100.0 * r / b)
            .collect();
        println!(
            "  {name:<22} {rps:>9.0} req/s  median ratio {:>5.1}% of bare (per round: {})",
            median(ratios.clone()),
            per_round(&ratios)
        );
    }
    // Throughput on a shared machine moves with whatever else runs; the CPU
    // a request costs moves much less. Bare CPU per request over a variant's
    // is the share of bare's throughput the variant reaches on a machine it
    // has to itself, where the bench is CPU-bound.
    if cpu[0].iter().all(|c| *c > 0.0) {
        println!("CPU per request (this process, plus redis-server for Redis stores):");
        for (i, (name, ..)) in variants.iter().enumerate() {
            let ratios: Vec<f64> = cpu[0]
                .iter()
                .zip(&cpu[i])
                .map(|(b, c)| 100.0 * b / c)
                .collect();
            println!(
                "  {name:<22} {:>6.1} us  bare/this median {:>5.1}% (per round: {})",
                median(cpu[i].clone()),
                median(ratios.clone()),
                per_round(&ratios)
            );
        }
    }
}

/// CPU seconds used so far by this process (the servers and the load
/// generator) and by `redis`, when given; 0 where `/proc` is missing.
fn cpu_seconds(redis: Option<&support::RedisServer>) -> f64 {
    // utime and stime (fields 14 and 15, after the parenthesised name) of
    // every thread, live or gone, in clock ticks: 100 a second on Linux.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let own = match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    };
    let redis = redis.map_or(0.0, |server| {
        server
            .cli(&["INFO", "cpu"])
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| *name == "used_cpu_sys" || *name == "used_cpu_user")
            .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
            .sum()
    });
    own + redis
}
