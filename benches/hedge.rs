//! The tail a hedge cuts, side by side in one run: no hedge, tower's
//! `Hedge`, palisade's `HedgeLayer`.
//!
//! - The backend: every attempt (first or hedge) draws its latency from a
//!   seeded mix: 90% 2 ms, 9% 10 ms, 1% 50 ms (tokio's timer rounds sleeps
//!   up to its millisecond ticks: they measure ~3, ~11 and ~51 ms).
//! - The load: `HEDGE_WORKERS` (32) closed-loop callers share
//!   `HEDGE_REQUESTS` (5,000) requests; latency counts from the call to the
//!   answer.
//! - tower: `Hedge::new(backend, policy, 20, 0.9, period)`: its p90 delay,
//!   from a histogram of whole milliseconds (rounded up) of the previous
//!   `HEDGE_TOWER_PERIOD_MS` (100 ms), after 20 data points.
//! - palisade: `HedgeLayer` at `HEDGE_PERCENTILE` (0.95), a window of
//!   `HEDGE_WINDOW_MS` (1,000 ms), 20 samples, `HEDGE_MAX_HEDGES` (2), on a
//!   budget of 10 tokens earning `HEDGE_TOKEN_RATIO` (0.05) per success:
//!   at most ~5% extra calls. Then the same at p90 on a budget earning
//!   0.1 per success, to compare with tower at tower's own extra load.
//! - Extra calls: backend calls beyond one per request, in % of requests.
//!
//! `HEDGE_RUNS` (3) runs, each variant once per run, interleaved; seeds
//! `HEDGE_SEED` (7), then 8, 9, ... per run.
//!
//! `cargo bench -p palisade-benches --no-default-features --features hedge --bench hedge`

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use palisade::attempt::{Budget, ErrorIsRetryable, Replay};
use palisade::hedge::HedgeLayer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A request: always safe to send again.
#[derive(Debug, Clone, Copy)]
struct Req;

impl Replay for Req {
    fn replay(&self) -> Option<Self> {
        Some(Req)
    }
}

#[derive(Clone, Copy)]
struct TowerPolicy;

impl tower::hedge::Policy<Req> for TowerPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(*req)
    }
    fn can_retry(&self, _: &Req) -> bool {
        true
    }
}

/// A seeded backend: each attempt draws its latency from the mix.
#[derive(Clone)]
struct Backend {
    rng: Arc<AtomicU64>,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    fn new(seed: u64) -> Self {
        Self {
            rng: Arc::new(AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)),
            calls: Arc::default(),
        }
    }

    /// The next latency: xorshift64*, one draw per attempt.
    fn draw(&self) -> Duration {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y >> 12;
            y ^= y << 25;
            y ^= y >> 27;
            match self
                .rng
                .compare_exchange(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    let r = y.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1000;
                    return Duration::from_millis(match r {
                        0..900 => 2,
                        900..990 => 10,
                        _ => 50,
                    });
                }
                Err(seen) => x = seen,
            }
        }
    }

    fn service(
        &self,
    ) -> impl Service<Req, Response = (), Error = Infallible, Future: Send> + Clone + Send + 'static
    {
        let backend = self.clone();
        service_fn(move |_: Req| {
            backend.calls.fetch_add(1, Ordering::Relaxed);
            let latency = backend.draw();
            async move {
                tokio::time::sleep(latency).await;
                Ok(())
            }
        })
    }
}

/// One request through a variant.
type Call = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Shares one service (tower's `Hedge` is not `Clone`): readiness of these
/// stacks is immediate, so the lock is never held across an await.
fn shared<S>(svc: S) -> Call
where
    S: Service<Req, Response = ()> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Debug,
{
    let svc = Arc::new(Mutex::new(svc));
    Arc::new(move || {
        let future = {
            let mut svc = svc.lock().unwrap_or_else(PoisonError::into_inner);
            svc.ready()
                .now_or_never()
                .expect("always ready")
                .expect("never fails");
            svc.call(Req)
        };
        Box::pin(async move {
            future.await.expect("never fails");
        })
    })
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    name: &'static str,
    latencies: Vec<Duration>,
    extra: f64,
}

async fn drive(call: Call, requests: usize, workers: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let start = Instant::now();
                call().await;
                latencies.push(start.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(requests);
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies.expect("a worker"));
    }
    all
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let requests: usize = env("HEDGE_REQUESTS", 5000);
    let workers: usize = env("HEDGE_WORKERS", 32);
    let runs: u64 = env("HEDGE_RUNS", 3);
    let seed: u64 = env("HEDGE_SEED", 7);
    let period = Duration::from_millis(env("HEDGE_TOWER_PERIOD_MS", 100));
    let percentile: f64 = env("HEDGE_PERCENTILE", 0.95);
    let window = Duration::from_millis(env("HEDGE_WINDOW_MS", 1000));
    let max_hedges: u32 = env("HEDGE_MAX_HEDGES", 2);
    let ratio: f64 = env("HEDGE_TOKEN_RATIO", 0.05);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    println!(
        "{requests} requests, {workers} workers; tower: p90, period {period:?}; palisade: \
         p{}, window {window:?}, max_hedges {max_hedges}, token ratio {ratio}\n",
        percentile * 100.0
    );
    for run in 0..runs {
        let seed = seed + run;
        let mut rows = Vec::new();
        for variant in [
            "no hedge",
            "tower Hedge",
            "palisade Hedge",
            "palisade Hedge, p90, 10% budget",
        ] {
            let backend = Backend::new(seed);
            let call = match variant {
                "no hedge" => shared(backend.service()),
                "tower Hedge" => shared(tower::hedge::Hedge::new(
                    backend.service(),
                    TowerPolicy,
                    20,
                    0.9,
                    period,
                )),
                _ => {
                    let (percentile, ratio) = if variant == "palisade Hedge" {
                        (percentile, ratio)
                    } else {
                        (0.9, 0.1)
                    };
                    let layer = HedgeLayer::new(ErrorIsRetryable)
                        .percentile(percentile)
                        .expect("a percentile")
                        .window(window)
                        .expect("a window")
                        .min_samples(NonZeroU32::new(20).unwrap())
                        .max_hedges(max_hedges)
                        .budget(
                            Budget::new(NonZeroU32::new(10).unwrap(), ratio).expect("a budget"),
                        );
                    shared(layer.layer(backend.service()))
                }
            };
            let mut latencies = rt.block_on(drive(call, requests, workers));
            latencies.sort_unstable();
            let calls = backend.calls.load(Ordering::Relaxed);
            rows.push(Row {
                name: variant,
                extra: (calls as f64 - requests as f64) * 100.0 / requests as f64,
                latencies,
            });
        }
        println!("Run {} (seed {seed}), latency in ms:\n", run + 1);
        println!("| variant | p50 | p90 | p99 | p99.9 | max | extra calls |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let l = &row.latencies;
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.1}% |",
                row.name,
                ms(quantile(l, 0.5)),
                ms(quantile(l, 0.9)),
                ms(quantile(l, 0.99)),
                ms(quantile(l, 0.999)),
                ms(*l.last().expect("a latency")),
                row.extra
            );
        }
        println!();
    }
}
