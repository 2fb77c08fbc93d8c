//! Added cost per call of palisade's circuit breaker (closed) over a bare
//! always-ready service, against failsafe's and tower-resilience's breakers.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the added cost per call and palisade's ratio to
//! failsafe's in every tripping mode (the target: <= 0.5 in each).
//!
//! `cargo bench -p palisade-benches --no-default-features --features circuit-breaker --bench circuit_breaker`

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Rate};
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use tower::{Layer, Service, ServiceExt, service_fn};

fn bare() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x) })
}

/// failsafe has no tower layer: this is the adapter a user would write,
/// handing each response future to the breaker.
#[derive(Clone)]
struct Failsafe<S, B> {
    inner: S,
    breaker: B,
}

impl<S, B, R> Service<R> for Failsafe<S, B>
where
    S: Service<R>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

/// `iters` calls of `ready().await` + `call().await` on one task.
async fn calls<S>(mut svc: S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        let ready = svc.ready().await.unwrap();
        let _ = black_box(ready.call(black_box(i)).await);
    }
    start.elapsed()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn variants() -> Vec<(&'static str, Run)> {
    vec![
        ("bare", run(|n| calls(bare(), n))),
        (
            "palisade_consecutive",
            run(|n| calls(CircuitBreakerLayer::new(Config::default()).layer(bare()), n)),
        ),
        (
            "palisade_count_window",
            run(|n| {
                let layer = CircuitBreakerLayer::new(
                    Config::new()
                        .count_window(nz(100))
                        .minimum_calls(nz(20))
                        .failure_rate(Rate::HALF),
                );
                calls(layer.layer(bare()), n)
            }),
        ),
        (
            "failsafe",
            run(|n| {
                let svc = Failsafe {
                    inner: bare(),
                    breaker: failsafe::Config::new().build(),
                };
                calls(svc, n)
            }),
        ),
        (
            "tower_resilience",
            run(|n| {
                let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                    .failure_rate_threshold(0.5)
                    .sliding_window_size(100)
                    .build()
                    .unwrap();
                calls(layer.layer(bare()), n)
            }),
        ),
        // The modes that read the clock: once per call (time window), twice
        // (slow calls).
        (
            "palisade_time_window",
            run(|n| {
                let layer = CircuitBreakerLayer::new(
                    Config::new()
                        .time_window(Duration::from_secs(10), nz(10))
                        .minimum_calls(nz(20)),
                );
                calls(layer.layer(bare()), n)
            }),
        ),
        (
            "palisade_slow_calls",
            run(|n| {
                let layer = CircuitBreakerLayer::new(
                    Config::new().slow_calls(Duration::from_secs(1), Rate::HALF),
                );
                calls(layer.layer(bare()), n)
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "circuit_breaker", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 1_000_000;
    let variants = variants();
    let m = interleaved_medians(&variants, ROUNDS, ITERS);
    let bare = m[0];
    println!("\ncircuit breaker summary (median of {ROUNDS} interleaved rounds of {ITERS} calls)");
    println!("  {:<28} {bare:7.2} ns/call", "bare");
    for (i, (name, _)) in variants.iter().enumerate().skip(1) {
        println!(
            "  {name:<28} {:7.2} ns/call, added {:7.2} ns",
            m[i],
            m[i] - bare
        );
    }
    let failsafe = m[3] - bare;
    for (i, name) in [
        (1, "consecutive"),
        (2, "count window"),
        (5, "time window"),
        (6, "slow calls"),
    ] {
        let added = m[i] - bare;
        println!(
            "  palisade {name:<13} / failsafe added: {:5.2} (target <= 0.50); added {added:6.2} ns",
            added / failsafe
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // A profiling run (`--profile-time`) wants only the chosen bench.
    if !std::env::args().any(|arg| arg == "--profile-time") {
        summary();
    }
}
