//! Drives a running order API demo with concurrent traffic, duplicate keys
//! and injected faults, then checks that no order was charged twice.
//!
//! ```text
//! cargo run -p order-api &
//! cargo run -p order-api --bin chaos -- [ADDR] [--orders N] [--concurrency C] [--seconds S]
//! ```
//!
//! `ADDR` (or `CHAOS_ADDR`) defaults to `127.0.0.1:3000` and must be a
//! loopback address; `ADMIN_TOKEN` is sent to `/admin/*` when set. The run
//! is bounded: at most `--orders` orders (default 200, at most 10000) and
//! `--seconds` of traffic (default 60).
//!
//! Phase one turns faults on (failing, slow payments and recommendations)
//! and sends every order, some twice at once, some again with another body,
//! plus invalid bodies and product pages. Phase two clears the faults and
//! retries, with the same key and body, every order that has no 201 yet, as
//! a client should. The table at the end counts every outcome; the last
//! line compares the charges the demo's fake provider made during the run
//! with the keys that got a 201. They must be equal (this holds when the
//! demo charges its own fake provider, the default, and nothing else sends
//! it orders meanwhile); the exit code is 1 when they are not.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MAX_ORDERS: usize = 10_000;
/// Distinct callers (`X-Api-Key`) the traffic comes from.
const CALLERS: usize = 8;

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    orders: usize,
    concurrency: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = std::env::var("CHAOS_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let (mut orders, mut concurrency, mut seconds) = (200usize, 16usize, 60u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--orders" => {
                orders = value("--orders")?
                    .parse()
                    .map_err(|e| format!("--orders: {e}"))?
            }
            "--concurrency" => {
                concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?;
            }
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: chaos [ADDR] [--orders N] [--concurrency C] [--seconds S]".to_owned(),
                );
            }
            other if !other.starts_with('-') => addr = other.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or(format!("{addr}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: chaos only drives a local demo"
        ));
    }
    if !(1..=MAX_ORDERS).contains(&orders)
        || !(1..=256).contains(&concurrency)
        || !(1..=600).contains(&seconds)
    {
        return Err(format!(
            "bounds: --orders 1..={MAX_ORDERS}, --concurrency 1..=256, --seconds 1..=600"
        ));
    }
    Ok(Args {
        addr,
        orders,
        concurrency,
        seconds,
    })
}

struct Demo {
    client: HttpClient,
    base: String,
    admin_token: Option<String>,
}

struct Reply {
    status: StatusCode,
    replayed: bool,
    retry_after: Option<u64>,
    body: Value,
}

impl Demo {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if path.starts_with("/admin/")
            && let Some(token) = &self.admin_token
        {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Full::from(serde_json::to_vec(b)?)
            }
            None => Full::default(),
        };
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            self.client.request(request.body(body)?),
        )
        .await??;
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            replayed,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// Orders come from 8 callers (`X-Api-Key`), each with its own rate
    /// limit; a key always comes from the same caller, so its duplicates and
    /// retries meet the same idempotency record.
    async fn order(&self, key: &str, body: &Value) -> Result<Reply, BoxError> {
        let caller = key.bytes().map(usize::from).sum::<usize>() % CALLERS;
        self.send(
            Method::POST,
            "/orders",
            &[
                ("idempotency-key", key.to_owned()),
                ("x-api-key", format!("chaos-{caller}")),
            ],
            Some(body),
        )
        .await
    }

    async fn set_faults(&self, faults: Value) -> Result<(), BoxError> {
        let r = self
            .send(Method::PUT, "/admin/faults", &[], Some(&faults))
            .await?;
        if r.status != StatusCode::OK {
            return Err(format!("PUT /admin/faults answered {}: {}", r.status, r.body).into());
        }
        Ok(())
    }

    async fn charged(&self) -> Result<u64, BoxError> {
        let r = self.send(Method::GET, "/admin/stats", &[], None).await?;
        r.body["payments_charged"]
            .as_u64()
            .ok_or_else(|| format!("GET /admin/stats answered {}: {}", r.status, r.body).into())
    }
}

/// Outcome counters, by label.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn add(&self, label: &'static str) {
        *self.counts.lock().unwrap().entry(label).or_default() += 1;
    }

    fn order_reply(&self, r: &Result<Reply, BoxError>) {
        self.add(match r {
            Ok(r) if r.status == StatusCode::CREATED && r.replayed => "201 replayed",
            Ok(r) if r.status == StatusCode::CREATED => "201 created",
            Ok(r) => match r.status.as_u16() {
                409 => "409 in progress",
                422 => "422 rejected",
                429 => "429 rate limited",
                502 => "502 provider error",
                503 => "503 breaker open",
                504 => "504 provider timeout",
                400..=499 => "other 4xx",
                _ => "other 5xx",
            },
            Err(_) => "transport error",
        });
    }

    fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }
}

fn order_body(i: usize, variant: u64) -> Value {
    json!({
        "customer_id": format!("chaos-{}", i % 17),
        "currency": "EUR",
        "items": [
            {"sku": format!("SKU-{}", i % 100), "quantity": 1 + (i % 5), "unit_price_cents": 199 + variant},
            {"sku": "SHIPPING", "quantity": 1, "unit_price_cents": 495},
        ],
        "discount_percent": (i % 4) * 5,
    })
}

/// Sends one order the chaotic way; returns whether its key got a 201.
async fn drive_order(demo: &Demo, tally: &Tally, i: usize, key: &str) -> bool {
    let body = order_body(i, 0);
    let mut ok = false;
    if fastrand::f64() < 0.3 {
        // The same request twice at once: a double click, a retry storm.
        let (a, b) = tokio::join!(demo.order(key, &body), demo.order(key, &body));
        for r in [&a, &b] {
            tally.order_reply(r);
            ok |= r.as_ref().is_ok_and(|r| r.status == StatusCode::CREATED);
        }
    } else {
        let r = demo.order(key, &body).await;
        tally.order_reply(&r);
        ok = r.as_ref().is_ok_and(|r| r.status == StatusCode::CREATED);
    }
    if ok && fastrand::f64() < 0.15 {
        // The same key with another body: refused, never charged.
        tally.order_reply(&demo.order(key, &order_body(i, 1)).await);
    }
    if fastrand::f64() < 0.1 {
        // An invalid body under its own key: refused, never charged.
        let r = demo
            .order(
                &format!("{key}-bad"),
                &json!({"customer_id": "", "items": []}),
            )
            .await;
        tally.order_reply(&r);
    }
    let page = demo
        .send(
            Method::GET,
            &format!("/products/{}", 1 + i % 100),
            &[("x-api-key", format!("chaos-{}", i % CALLERS))],
            None,
        )
        .await;
    tally.add(match page {
        Ok(p) if p.status == StatusCode::OK && p.body["degraded"] == true => {
            "product page degraded"
        }
        Ok(p) if p.status == StatusCode::OK => "product page ok",
        Ok(p) if p.status == StatusCode::TOO_MANY_REQUESTS => "product page 429",
        Ok(_) | Err(_) => "product page other",
    });
    ok
}

/// Phase two: the same key and body until a 201, honouring Retry-After.
async fn settle(demo: &Demo, tally: &Tally, i: usize, key: &str, deadline: Instant) -> bool {
    let body = order_body(i, 0);
    for _ in 0..8 {
        let r = demo.order(key, &body).await;
        tally.order_reply(&r);
        match r {
            Ok(r) if r.status == StatusCode::CREATED => return true,
            Ok(r) if r.status == StatusCode::UNPROCESSABLE_ENTITY => return false,
            Ok(r) => {
                let wait = Duration::from_secs(r.retry_after.unwrap_or(0).min(5))
                    .max(Duration::from_millis(200));
                if Instant::now() + wait > deadline {
                    return false;
                }
                tokio::time::sleep(wait).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("chaos: {e}");
        std::process::exit(2);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let demo = Arc::new(Demo {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}", args.addr),
        admin_token: std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
    });
    let health = demo
        .send(Method::GET, "/health", &[], None)
        .await
        .map_err(|e| {
            format!(
                "no demo at {}: {e} (start it with `cargo run -p order-api`)",
                args.addr
            )
        })?;
    if health.status != StatusCode::OK {
        return Err(format!("GET /health answered {}", health.status).into());
    }
    let charged_before = demo.charged().await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    println!(
        "chaos: {} orders, {} at a time, at most {} s, against {}",
        args.orders, args.concurrency, args.seconds, demo.base
    );
    println!("phase 1: payments fail 20% and take 50 ms, recommendations fail 30%");
    demo.set_faults(json!({
        "payment": {"fail_rate": 0.2, "latency_ms": 50},
        "recommendations": {"fail_rate": 0.3, "latency_ms": 20},
    }))
    .await?;

    let progress = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = tally.snapshot();
                println!(
                    "  {:>4.0}s  {} responses; 201 {} (+{} replayed), 409 {}, 422 {}, 429 {}, 5xx {}, degraded pages {}",
                    started.elapsed().as_secs_f64(),
                    tally.total(),
                    s.get("201 created").unwrap_or(&0),
                    s.get("201 replayed").unwrap_or(&0),
                    s.get("409 in progress").unwrap_or(&0),
                    s.get("422 rejected").unwrap_or(&0),
                    s.get("429 rate limited").unwrap_or(&0),
                    s.get("502 provider error").unwrap_or(&0)
                        + s.get("503 breaker open").unwrap_or(&0)
                        + s.get("504 provider timeout").unwrap_or(&0),
                    s.get("product page degraded").unwrap_or(&0),
                );
            }
        })
    };

    let keys: Vec<String> = (0..args.orders)
        .map(|i| format!("chaos-{run_id}-{i}"))
        .collect();
    let succeeded = Arc::new(Mutex::new(vec![false; args.orders]));
    let sent = Arc::new(Mutex::new(vec![false; args.orders]));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::new();
    for (i, key) in keys.iter().cloned().enumerate() {
        if Instant::now() >= deadline {
            break;
        }
        let permit = permits.clone().acquire_owned().await?;
        let (demo, tally, succeeded, sent) =
            (demo.clone(), tally.clone(), succeeded.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            sent.lock().unwrap()[i] = true;
            let ok = drive_order(&demo, &tally, i, &key).await;
            succeeded.lock().unwrap()[i] = ok;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await?;
    }

    println!("phase 2: faults cleared; retrying every order without a 201, same key and body");
    demo.set_faults(json!({"payment": {}, "recommendations": {}}))
        .await?;
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    let pending: Vec<usize> = (0..args.orders)
        .filter(|&i| sent.lock().unwrap()[i] && !succeeded.lock().unwrap()[i])
        .collect();
    let mut tasks = Vec::new();
    for i in pending {
        let permit = permits.clone().acquire_owned().await?;
        let (demo, tally, succeeded, key) = (
            demo.clone(),
            tally.clone(),
            succeeded.clone(),
            keys[i].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ok = settle(&demo, &tally, i, &key, settle_deadline).await;
            succeeded.lock().unwrap()[i] = ok;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await?;
    }
    progress.abort();

    let charged = demo.charged().await? - charged_before;
    let distinct = succeeded.lock().unwrap().iter().filter(|ok| **ok).count() as u64;
    let attempted = sent.lock().unwrap().iter().filter(|s| **s).count();
    println!();
    println!("{:<24} {:>8}", "outcome", "count");
    println!("{:-<24} {:->8}", "", "");
    for (label, count) in tally.snapshot() {
        println!("{label:<24} {count:>8}");
    }
    println!("{:-<24} {:->8}", "", "");
    println!("{:<24} {:>8}", "orders attempted", attempted);
    println!("{:<24} {:>8}", "keys with a 201", distinct);
    println!("{:<24} {:>8}", "payments charged", charged);
    println!(
        "{:<24} {:>7.1}s",
        "elapsed",
        started.elapsed().as_secs_f64()
    );
    if charged == distinct {
        println!(
            "\nOK: every successful key was charged exactly once ({charged} charges, {distinct} keys)"
        );
        Ok(())
    } else {
        println!("\nMISMATCH: {charged} charges for {distinct} successful keys");
        std::process::exit(1);
    }
}
