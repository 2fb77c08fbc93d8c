//! Uncontended cost per call of palisade's bulkhead (one global permit set
//! in a `MemoryStore`) over a bare always-ready service, against tower's
//! `limit::ConcurrencyLimit` with the same limit.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the added cost per call and palisade's ratio to
//! tower's (the target is <= 1.0).
//!
//! `cargo bench -p palisade-benches --no-default-features --features bulkhead --bench bulkhead`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::bulkhead::BulkheadLayer;
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use tower::{Layer, Service, ServiceExt};

const LIMIT: u32 = 32;

/// An always-ready service answering at once; a named type, so the layers
/// see its future is `Send` (the bulkhead's boxed future needs it).
#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u64) -> Self::Future {
        ready(Ok(x))
    }
}

fn bare() -> Bare {
    Bare
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

fn variants() -> Vec<(&'static str, Run)> {
    vec![
        ("bare", run(|n| calls(bare(), n))),
        (
            "tower_concurrency_limit",
            run(|n| {
                calls(
                    tower::limit::ConcurrencyLimitLayer::new(LIMIT as usize).layer(bare()),
                    n,
                )
            }),
        ),
        (
            "palisade_bulkhead",
            run(|n| {
                let limit = NonZeroU32::new(LIMIT).expect("a nonzero limit");
                calls(BulkheadLayer::new(limit).layer(bare()), n)
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "bulkhead", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 1_000_000;
    let m = interleaved_medians(&variants(), ROUNDS, ITERS);
    let (bare, tower, ours) = (m[0], m[1], m[2]);
    println!("\nbulkhead summary (median of {ROUNDS} interleaved rounds of {ITERS} calls)");
    println!("  bare service                    {bare:7.2} ns/call");
    println!(
        "  tower ConcurrencyLimit({LIMIT})      {tower:7.2} ns/call, added {:6.2} ns",
        tower - bare
    );
    println!(
        "  palisade Bulkhead({LIMIT}), memory   {ours:7.2} ns/call, added {:6.2} ns",
        ours - bare
    );
    println!(
        "  ratio palisade/tower added      {:7.2} (target <= 1.00)",
        (ours - bare) / (tower - bare)
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
