//! Overload, side by side in one run (issue #17): an open-loop generator
//! against a backend of fixed capacity, behind each protection in turn.
//!
//! - The backend: a semaphore of 32 and a 10 ms sleep per request (tokio's
//!   timer rounds the sleep up, so a slot is held about 11 ms: the real
//!   capacity is measured first, by 64 closed-loop callers).
//! - The load: Poisson arrivals on a seeded schedule, the same schedule for
//!   every variant at a given load, each request spawned at its scheduled
//!   time whatever happened to the ones before (open loop: the generator
//!   does not slow down with the server). Latency counts from the scheduled
//!   arrival, so time a request spends waiting for the generator counts too.
//! - Per point: `OVERLOAD_SECS` of arrivals; those of the first
//!   `OVERLOAD_WARMUP_SECS` are run but not counted (an adaptive limiter
//!   starts afresh at each point). After the last arrival, requests get
//!   `OVERLOAD_GRACE_SECS` to finish; the rest are dropped and counted as
//!   unfinished (a latency of at least the time they had, shown as `>`).
//! - Goodput: successes within 100 ms of their scheduled arrival, per second
//!   and as % of the measured capacity. Rejections: refusals of the
//!   protection, count and % of offered; "vs excess" divides them by the
//!   requests offered above capacity. p50/p99: of accepted (successful and
//!   unfinished) requests, from the scheduled arrival.
//! - The adaptive limiter (Gradient2, and Aimd with a 25 ms latency
//!   threshold) is not told the capacity and has the static bulkhead's queue.
//! - Then the halving run: the bulkhead and the adaptive limiter at 1.5x,
//!   the backend's capacity halved at half time; it reports when goodput
//!   over a sliding 250 ms window (by completion time) first reaches 90% of
//!   the new capacity.
//! - It writes a plot of goodput and p99 against offered load to
//!   `benches/overload.svg` (or `OVERLOAD_SVG`).
//!
//! Settings by environment: `OVERLOAD_SECS` (default 3), `OVERLOAD_WARMUP_SECS`
//! (0.5), `OVERLOAD_GRACE_SECS` (1), `OVERLOAD_LOADS` (`0.7,0.85,1.1,1.5,2,3`),
//! `OVERLOAD_VARIANTS` (names containing any of these comma-separated words),
//! `OVERLOAD_HALVING_SECS` (8; 0 skips the run), `OVERLOAD_SEED` (17),
//! `OVERLOAD_BULKHEAD` (the static bulkhead's queue: `lifo:64:20`, the default, is adaptive
//! LIFO with the default CoDel, 64 waiters, 20 ms; `lifo:32:20:5:50` sets
//! CoDel's target and interval in ms; `fifo:32:20`, `none`),
//! `OVERLOAD_BULKHEAD_BACK_PRESSURE` (set: `back_pressure(true)`, for
//! contrast: every caller awaits readiness unbounded; unset: the default,
//! `back_pressure(false)`), `OVERLOAD_ADAPTIVE` (the adaptive limiter's
//! queue, same syntax), `OVERLOAD_G2_TOLERANCE` (Gradient2's tolerance).
//!
//! `cargo bench -p palisade-benches --no-default-features --features overload --bench overload`

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd, Gradient2};
use palisade::bulkhead::BulkheadLayer;
use palisade::load_shed::{CoDel, Queue, QueueOrder};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tower::{BoxError, Layer, Service, ServiceExt};

/// The backend's concurrency.
const CAPACITY: u32 = 32;
/// The backend's work per request.
const WORK: Duration = Duration::from_millis(10);
/// The latency objective goodput counts within.
const OBJECTIVE: Duration = Duration::from_millis(100);
/// tower's buffer in the buffered stack.
const BUFFER: usize = 64;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Refused by the protection.
    Rejected,
    /// Any other error (none expected).
    Failed,
}

/// One request through a variant's stack.
type Call = Arc<dyn Fn() -> BoxFuture<'static, Outcome> + Send + Sync>;

/// The simulated backend: a fixed number of slots, 10 ms of work each.
#[derive(Clone)]
struct Backend {
    slots: Arc<Semaphore>,
}

impl Backend {
    fn new() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(CAPACITY as usize)),
        }
    }

    /// The backend as a tower service: waits for a slot (unbounded), works.
    fn service(&self) -> BackendService {
        BackendService {
            slots: self.slots.clone(),
        }
    }

    /// Takes `n` slots away for good, as soon as they free (the semaphore is
    /// fair: they are taken before later requests get one).
    fn remove_slots(&self, n: u32) {
        let slots = self.slots.clone();
        tokio::spawn(async move {
            slots.acquire_many(n).await.expect("never closed").forget();
        });
    }
}

/// The backend's service: always ready, it queues for a slot unbounded.
#[derive(Clone)]
struct BackendService {
    slots: Arc<Semaphore>,
}

impl Service<()> for BackendService {
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let slots = self.slots.clone();
        Box::pin(async move {
            let _slot = slots.acquire().await.expect("never closed");
            tokio::time::sleep(WORK).await;
            Ok(())
        })
    }
}

/// A protection over the backend.
struct Variant {
    name: &'static str,
    build: Box<dyn Fn(&Backend) -> Call>,
}

fn tower_call<S>(svc: S) -> Call
where
    S: Service<(), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    // Only the generator calls it: the lock is never contended.
    let svc = Mutex::new(svc);
    Arc::new(move || {
        let svc = svc.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Box::pin(async move {
            match svc.oneshot(()).await {
                Ok(()) => Outcome::Ok,
                Err(e) if e.is::<tower::load_shed::error::Overloaded>() => Outcome::Rejected,
                Err(_) => Outcome::Failed,
            }
        })
    })
}

fn bulkhead_call<S>(svc: palisade::bulkhead::Bulkhead<S>) -> Call
where
    S: Service<(), Response = (), Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let svc = Mutex::new(svc);
    Arc::new(move || {
        let svc = svc.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Box::pin(async move {
            match svc.oneshot(()).await {
                Ok(()) => Outcome::Ok,
                Err(palisade::bulkhead::Error::Shed(_)) => Outcome::Rejected,
                Err(_) => Outcome::Failed,
            }
        })
    })
}

/// The static bulkhead's queue, from `OVERLOAD_BULKHEAD`.
fn bulkhead_queue() -> (String, Option<Queue>) {
    let spec = std::env::var("OVERLOAD_BULKHEAD").unwrap_or_else(|_| "lifo:64:20".into());
    parse_queue(spec)
}

/// The adaptive limiter's queue, from `OVERLOAD_ADAPTIVE` (default
/// `ADAPTIVE_QUEUE`).
fn adaptive_queue() -> (String, Option<Queue>) {
    let spec = std::env::var("OVERLOAD_ADAPTIVE").unwrap_or_else(|_| ADAPTIVE_QUEUE.into());
    parse_queue(spec)
}

fn parse_queue(spec: String) -> (String, Option<Queue>) {
    if spec == "none" {
        return (spec, None);
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (order, len, wait_ms, codel) = match parts[..] {
        [order, len, wait_ms] => (order, len, wait_ms, None),
        [order, len, wait_ms, target, interval] => (order, len, wait_ms, Some((target, interval))),
        _ => panic!(
            "OVERLOAD_BULKHEAD: order:len:wait_ms[:target_ms:interval_ms] or none, got {spec}"
        ),
    };
    let ms = |v: &str| Duration::from_millis(v.parse().expect("OVERLOAD_BULKHEAD: milliseconds"));
    let len: usize = len.parse().expect("OVERLOAD_BULKHEAD: a queue length");
    let wait = ms(wait_ms);
    let codel = codel.map_or_else(CoDel::default, |(target, interval)| {
        CoDel::new(ms(target), ms(interval)).expect("a valid CoDel")
    });
    let order = match order {
        "fifo" => QueueOrder::Fifo,
        "lifo" => QueueOrder::AdaptiveLifo(codel),
        other => panic!("OVERLOAD_BULKHEAD: fifo or lifo, got {other}"),
    };
    let queue = Queue::new(len, wait).expect("a valid queue").order(order);
    (spec, Some(queue))
}

fn variants() -> Vec<Variant> {
    let (_, queue) = bulkhead_queue();
    let mut all = vec![
        Variant {
            name: "no protection",
            build: Box::new(|b| tower_call(b.service().map_err(BoxError::from))),
        },
        Variant {
            name: "tower LoadShed + ConcurrencyLimit(32)",
            build: Box::new(|b| {
                let svc = tower::ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(CAPACITY as usize)
                    .service(b.service());
                tower_call(svc)
            }),
        },
        Variant {
            name: "tower LoadShed + Buffer(64) + ConcurrencyLimit(32)",
            build: Box::new(|b| {
                let svc = tower::ServiceBuilder::new()
                    .load_shed()
                    .buffer(BUFFER)
                    .concurrency_limit(CAPACITY as usize)
                    .service(b.service());
                tower_call(svc)
            }),
        },
        Variant {
            name: "palisade bulkhead(32)",
            build: Box::new(move |b| {
                // Without back-pressure (the default): the gate decides in
                // `call` (a permit, its bounded queue, or a refusal). With
                // it, a saturated bulkhead is not ready, and each caller
                // awaiting readiness (`oneshot`, as here and in axum) waits
                // unbounded before the queue: see the README.
                let mut layer = BulkheadLayer::new(NonZeroU32::new(CAPACITY).expect("nonzero"))
                    .back_pressure(std::env::var_os("OVERLOAD_BULKHEAD_BACK_PRESSURE").is_some());
                if let Some(queue) = queue {
                    layer = layer.queue(queue);
                }
                bulkhead_call(layer.layer(b.service()))
            }),
        },
    ];
    all.extend(adaptive_variants());
    if let Ok(filter) = std::env::var("OVERLOAD_VARIANTS") {
        let words: Vec<String> = filter.split(',').map(|w| w.trim().to_lowercase()).collect();
        all.retain(|v| words.iter().any(|w| v.name.to_lowercase().contains(w)));
    }
    all
}

/// The adaptive limiter's queue (see `OVERLOAD_BULKHEAD` for the syntax).
const ADAPTIVE_QUEUE: &str = "lifo:16:3";

/// Gradient2's tolerance here (`OVERLOAD_G2_TOLERANCE`).
const G2_TOLERANCE: f64 = 1.2;

/// Aimd's latency threshold here: an objective (about twice the unloaded
/// p50), not the capacity; its 5 s default would never back off.
const AIMD_THRESHOLD: Duration = Duration::from_millis(25);

/// palisade's adaptive limiter, one variant per algorithm, not told the
/// capacity (they start at the default limit of 20), with the static
/// bulkhead's queue. Their names contain "adaptive": the halving run picks
/// them by it.
fn adaptive_variants() -> Vec<Variant> {
    let (_, queue) = adaptive_queue();
    let tolerance = env_f64("OVERLOAD_G2_TOLERANCE", G2_TOLERANCE);
    let layer = move |layer: AdaptiveConcurrencyLayer| match queue {
        Some(queue) => layer.queue(queue),
        None => layer,
    };
    vec![
        Variant {
            name: "palisade adaptive (Gradient2)",
            build: Box::new(move |b| {
                adaptive_call(
                    layer(AdaptiveConcurrencyLayer::new(
                        Gradient2::new()
                            .tolerance(tolerance)
                            .expect("a valid tolerance"),
                    ))
                    .layer(b.service()),
                )
            }),
        },
        Variant {
            name: "palisade adaptive (Aimd, 25 ms)",
            build: Box::new(move |b| {
                let aimd = Aimd::new().latency_threshold(AIMD_THRESHOLD);
                adaptive_call(layer(AdaptiveConcurrencyLayer::new(aimd)).layer(b.service()))
            }),
        },
    ]
}

fn adaptive_call<S>(svc: palisade::adaptive_concurrency::AdaptiveConcurrency<S>) -> Call
where
    S: Service<(), Response = (), Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let svc = Mutex::new(svc);
    Arc::new(move || {
        let svc = svc.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Box::pin(async move {
            match svc.oneshot(()).await {
                Ok(()) => Outcome::Ok,
                Err(palisade::adaptive_concurrency::Error::Shed(_)) => Outcome::Rejected,
                Err(_) => Outcome::Failed,
            }
        })
    })
}

/// A small seeded PRNG (SplitMix64): the schedule must be the same for
/// every variant and every run, and exponential gaps need nothing more.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Poisson arrivals at `rate` per second for `secs`: offsets from the start.
fn schedule(rate: f64, secs: f64, seed: u64) -> Vec<Duration> {
    let mut rng = SplitMix64(seed);
    let mut at = 0.0;
    let mut out = Vec::with_capacity((rate * secs * 1.1) as usize);
    loop {
        at += -rng.unit().ln() / rate;
        if at >= secs {
            return out;
        }
        out.push(Duration::from_secs_f64(at));
    }
}

/// One request's fate: its scheduled offset, latency, outcome (`None`:
/// unfinished when dropped, the latency then a lower bound).
#[derive(Debug, Clone, Copy)]
struct Record {
    at: Duration,
    latency: Duration,
    outcome: Option<Outcome>,
}

/// A request's latency and outcome, once it ends.
type Finished = Option<(Duration, Outcome)>;

/// Runs `arrivals` open loop through `call`, each request spawned at its
/// scheduled time; requests still running `grace` after the last arrival
/// are dropped and recorded as unfinished.
async fn drive(call: Call, arrivals: &[Duration], grace: Duration) -> Vec<Record> {
    let slots: Arc<Mutex<Vec<Finished>>> = Arc::new(Mutex::new(vec![None; arrivals.len()]));
    let mut set = JoinSet::new();
    let start = Instant::now() + Duration::from_millis(5);
    for (i, at) in arrivals.iter().enumerate() {
        let when = start + *at;
        if Instant::now() < when {
            sleep_until(when).await;
        }
        let call = call.clone();
        let slots = slots.clone();
        set.spawn(async move {
            let outcome = call().await;
            let latency = when.elapsed();
            slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some((latency, outcome));
        });
        // Keep the set from holding every finished task to the end.
        while set.try_join_next().is_some() {}
    }
    let end = start + arrivals.last().copied().unwrap_or_default() + grace;
    let _ = tokio::time::timeout_at(end, async { while set.join_next().await.is_some() {} }).await;
    let dropped_at = Instant::now();
    set.shutdown().await;
    let slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    arrivals
        .iter()
        .zip(slots.iter())
        .map(|(at, slot)| match slot {
            Some((latency, outcome)) => Record {
                at: *at,
                latency: *latency,
                outcome: Some(*outcome),
            },
            None => Record {
                at: *at,
                latency: dropped_at.saturating_duration_since(start + *at),
                outcome: None,
            },
        })
        .collect()
}

/// The backend's throughput with 64 callers always waiting, per second.
async fn measure_capacity(secs: f64) -> f64 {
    let backend = Backend::new();
    let svc = backend.service();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = JoinSet::new();
    for _ in 0..2 * CAPACITY {
        let svc = svc.clone();
        let (done, counting) = (done.clone(), counting.clone());
        set.spawn(async move {
            loop {
                let _ = svc.clone().oneshot(()).await;
                if counting.load(std::sync::atomic::Ordering::Relaxed) {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = done.load(std::sync::atomic::Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    set.shutdown().await;
    n as f64 / elapsed
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    variant: &'static str,
    load: f64,
    offered: f64,
    goodput: f64,
    goodput_pct: f64,
    rejected: usize,
    rejected_pct: f64,
    excess: f64,
    failed: usize,
    unfinished: usize,
    p50: Latency,
    p99: Latency,
}

/// A percentile: exact, or a lower bound when it falls on an unfinished
/// request.
#[derive(Debug, Clone, Copy)]
struct Latency {
    value: Duration,
    at_least: bool,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.value.as_secs_f64() * 1e3;
        let gt = if self.at_least { ">" } else { "" };
        if ms >= 1000.0 {
            write!(f, "{gt}{:.1} s", ms / 1e3)
        } else {
            write!(f, "{gt}{ms:.1} ms")
        }
    }
}

fn percentile(sorted: &[(Duration, bool)], p: f64) -> Latency {
    if sorted.is_empty() {
        return Latency {
            value: Duration::ZERO,
            at_least: false,
        };
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    let (value, at_least) = sorted[i];
    Latency { value, at_least }
}

fn summarize(
    variant: &'static str,
    load: f64,
    capacity: f64,
    records: &[Record],
    warmup: Duration,
) -> Row {
    let counted: Vec<&Record> = records.iter().filter(|r| r.at >= warmup).collect();
    let window = records
        .last()
        .map_or(0.0, |r| (r.at.saturating_sub(warmup)).as_secs_f64())
        .max(1e-9);
    let offered = counted.len() as f64 / window;
    let good = counted
        .iter()
        .filter(|r| r.outcome == Some(Outcome::Ok) && r.latency <= OBJECTIVE)
        .count();
    let rejected = counted
        .iter()
        .filter(|r| r.outcome == Some(Outcome::Rejected))
        .count();
    let failed = counted
        .iter()
        .filter(|r| r.outcome == Some(Outcome::Failed))
        .count();
    let unfinished = counted.iter().filter(|r| r.outcome.is_none()).count();
    let mut accepted: Vec<(Duration, bool)> = counted
        .iter()
        .filter_map(|r| match r.outcome {
            Some(Outcome::Ok) => Some((r.latency, false)),
            None => Some((r.latency, true)),
            _ => None,
        })
        .collect();
    accepted.sort();
    let goodput = good as f64 / window;
    Row {
        variant,
        load,
        offered,
        goodput,
        goodput_pct: 100.0 * goodput / capacity,
        rejected,
        rejected_pct: 100.0 * rejected as f64 / counted.len().max(1) as f64,
        excess: ((offered - capacity).max(0.0)) * window,
        failed,
        unfinished,
        p50: percentile(&accepted, 0.50),
        p99: percentile(&accepted, 0.99),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| variant | load | offered/s | goodput/s | % of capacity | rejected | % of offered | vs excess | p50 | p99 | unfinished |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let vs_excess = if r.excess >= 1.0 {
            format!("{:.2}x", r.rejected as f64 / r.excess)
        } else {
            "-".to_owned()
        };
        let failed = if r.failed > 0 {
            format!(" ({} failed)", r.failed)
        } else {
            String::new()
        };
        println!(
            "| {} | {:.2}x | {:.0} | {:.0} | {:.1}% | {}{failed} | {:.1}% | {vs_excess} | {} | {} | {} |",
            r.variant,
            r.load,
            r.offered,
            r.goodput,
            r.goodput_pct,
            r.rejected,
            r.rejected_pct,
            r.p50,
            r.p99,
            r.unfinished
        );
    }
}

/// The halving run of one variant: returns (goodput before the halving as %
/// of full capacity, recovery time, goodput over the last second as % of
/// the new capacity).
async fn halving(
    variant: &Variant,
    capacity: f64,
    secs: f64,
    seed: u64,
    grace: Duration,
) -> (f64, Option<Duration>, f64) {
    const WINDOW: Duration = Duration::from_millis(250);
    const STEP: Duration = Duration::from_millis(10);
    let backend = Backend::new();
    let call = (variant.build)(&backend);
    let arrivals = schedule(1.5 * capacity, secs, seed);
    let half = Duration::from_secs_f64(secs / 2.0);
    let halver = {
        let backend = backend.clone();
        let start = Instant::now() + Duration::from_millis(5);
        tokio::spawn(async move {
            sleep_until(start + half).await;
            backend.remove_slots(CAPACITY / 2);
        })
    };
    let records = drive(call, &arrivals, grace).await;
    let _ = halver.await;
    let new_capacity = capacity / 2.0;
    // Completion times of the requests that count for goodput.
    let mut done: Vec<Duration> = records
        .iter()
        .filter(|r| r.outcome == Some(Outcome::Ok) && r.latency <= OBJECTIVE)
        .map(|r| r.at + r.latency)
        .collect();
    done.sort();
    let rate = |from: Duration, to: Duration| {
        let lo = done.partition_point(|t| *t < from);
        let hi = done.partition_point(|t| *t < to);
        (hi - lo) as f64 / (to - from).as_secs_f64()
    };
    let warm = Duration::from_secs_f64((secs / 2.0 - 1.0).max(0.5).min(secs / 2.0));
    let before = 100.0 * rate(warm.min(half - STEP), half) / capacity;
    let end = Duration::from_secs_f64(secs);
    let mut recovery = None;
    let mut t = half + WINDOW;
    while t <= end {
        if rate(t - WINDOW, t) >= 0.9 * new_capacity {
            recovery = Some(t - half);
            break;
        }
        t += STEP;
    }
    let last = Duration::from_secs_f64((secs - 1.0).max(secs / 2.0 + 0.25));
    let after = 100.0 * rate(last, end) / new_capacity;
    (before, recovery, after)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: a number, got {v}"))
        })
        .unwrap_or(default)
}

fn plot(
    rows: &[Row],
    names: &[&'static str],
    path: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let max_load = rows.iter().map(|r| r.load).fold(1.0, f64::max) * 1.05;
    let colors = [
        RGBColor(0x99, 0x99, 0x99),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
    ];

    let mut goodput = ChartBuilder::on(&left)
        .caption("goodput (% of capacity)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.5..max_load, 0.0..110.0)?;
    goodput
        .configure_mesh()
        .x_desc("offered load (x capacity)")
        .draw()?;
    let p99_max = rows
        .iter()
        .map(|r| r.p99.value.as_secs_f64() * 1e3)
        .fold(100.0, f64::max)
        * 1.5;
    let mut p99 = ChartBuilder::on(&right)
        .caption("p99 of accepted, ms (log)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_load, (5.0..p99_max).log_scale())?;
    p99.configure_mesh()
        .x_desc("offered load (x capacity)")
        .draw()?;

    for (i, name) in names.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mine: Vec<&Row> = rows.iter().filter(|r| r.variant == *name).collect();
        let g: Vec<(f64, f64)> = mine.iter().map(|r| (r.load, r.goodput_pct)).collect();
        let l: Vec<(f64, f64)> = mine
            .iter()
            .map(|r| (r.load, (r.p99.value.as_secs_f64() * 1e3).max(5.0)))
            .collect();
        goodput
            .draw_series(LineSeries::new(g.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        goodput.draw_series(g.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        p99.draw_series(LineSeries::new(l.clone(), color.stroke_width(2)))?;
        p99.draw_series(l.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    goodput
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let secs = env_f64("OVERLOAD_SECS", 3.0);
    let warmup = Duration::from_secs_f64(env_f64("OVERLOAD_WARMUP_SECS", 0.5));
    let grace = Duration::from_secs_f64(env_f64("OVERLOAD_GRACE_SECS", 1.0));
    let halving_secs = env_f64("OVERLOAD_HALVING_SECS", 8.0);
    let seed = env_f64("OVERLOAD_SEED", 17.0) as u64;
    let loads: Vec<f64> = std::env::var("OVERLOAD_LOADS")
        .unwrap_or_else(|_| "0.7,0.85,1.1,1.5,2,3".into())
        .split(',')
        .map(|l| l.trim().parse().expect("OVERLOAD_LOADS: numbers"))
        .collect();
    let svg = std::env::var("OVERLOAD_SVG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/overload.svg").into());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let capacity = measure_capacity(2.0).await;
        let unloaded = {
            let backend = Backend::new();
            let call = tower_call(backend.service().map_err(BoxError::from));
            let records = drive(call, &schedule(0.3 * capacity, 2.0, seed), grace).await;
            summarize("unloaded", 0.3, capacity, &records, warmup)
        };
        println!(
            "backend: {CAPACITY} slots x {WORK:?}: measured capacity {capacity:.0}/s \
             (ideal {:.0}/s); unloaded (0.3x, no protection) p50 {}, p99 {}",
            f64::from(CAPACITY) / WORK.as_secs_f64(),
            unloaded.p50,
            unloaded.p99
        );
        let (bulkhead_spec, _) = bulkhead_queue();
        println!(
            "points of {secs} s ({warmup:?} warm-up not counted), grace {grace:?}, seed {seed}; \
             static bulkhead queue: {bulkhead_spec}\n"
        );

        let variants = variants();
        let mut rows = Vec::new();
        for (li, load) in loads.iter().enumerate() {
            let arrivals = schedule(load * capacity, secs, seed.wrapping_add(li as u64));
            for v in &variants {
                let backend = Backend::new();
                let call = (v.build)(&backend);
                let records = drive(call, &arrivals, grace).await;
                let row = summarize(v.name, *load, capacity, &records, warmup);
                eprintln!(
                    "  {:<52} {load:4.2}x goodput {:5.1}% p99 {}",
                    v.name, row.goodput_pct, row.p99
                );
                rows.push(row);
            }
        }
        rows.sort_by(|a, b| {
            let ia = variants.iter().position(|v| v.name == a.variant);
            let ib = variants.iter().position(|v| v.name == b.variant);
            ia.cmp(&ib).then(a.load.total_cmp(&b.load))
        });
        println!();
        print_table(&rows);

        let names: Vec<&'static str> = variants.iter().map(|v| v.name).collect();
        match plot(&rows, &names, &svg) {
            Ok(()) => println!("\nplot: {svg}"),
            Err(e) => eprintln!("\nplot failed: {e}"),
        }

        if halving_secs > 0.0 {
            println!(
                "\nhalving run: 1.5x for {halving_secs} s, capacity {CAPACITY} -> {} slots at {:.1} s; \
                 recovery: first 250 ms window after it with goodput >= 90% of the new capacity\n",
                CAPACITY / 2,
                halving_secs / 2.0
            );
            println!("| variant | goodput before (% of capacity) | recovery | goodput, last second (% of new capacity) |");
            println!("|---|---:|---:|---:|");
            let contenders = variants
                .iter()
                .filter(|v| v.name.contains("bulkhead") || v.name.contains("adaptive"));
            for v in contenders {
                let (before, recovery, after) =
                    halving(v, capacity, halving_secs, seed ^ 0xA5A5, grace).await;
                let recovery = recovery.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
                println!("| {} | {before:.1}% | {recovery} | {after:.1}% |", v.name);
            }
        }
    });
}
