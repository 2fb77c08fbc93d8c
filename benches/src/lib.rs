//! What the benches share: a runtime, a boxed variant type, a criterion group
//! over the variants, and interleaved rounds for a within-run comparison.
//!
//! Criterion measures each variant in turn, so load that comes and goes on a
//! small machine can favour one of them. [`interleaved_medians`] runs every
//! variant once per round instead, so drift hits all of them alike, and takes
//! the median per call: the ratios the closing notes quote come from there.

use std::future::Future;
use std::time::Duration;

use criterion::Criterion;
use tokio::runtime::Runtime;

/// One variant: runs `iters` calls on the runtime and says how long they took.
pub type Run = Box<dyn Fn(&Runtime, u64) -> Duration>;

/// A current-thread runtime with time and I/O, as a single task sees it.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// A variant from an async function of the iteration count.
pub fn run<F: Future<Output = Duration>>(f: impl Fn(u64) -> F + 'static) -> Run {
    Box::new(move |rt, iters| rt.block_on(f(iters)))
}

/// One criterion group with a bench per variant.
pub fn bench_group(c: &mut Criterion, group: &str, variants: &[(&'static str, Run)]) {
    let rt = runtime();
    let mut group = c.benchmark_group(group);
    for (name, f) in variants {
        group.bench_function(*name, |b| b.iter_custom(|iters| f(&rt, iters)));
    }
    group.finish();
}

/// The median nanoseconds per call of each variant over `rounds` interleaved
/// rounds of `iters` calls, in the order given.
pub fn interleaved_medians(
    variants: &[(&'static str, Run)],
    rounds: usize,
    iters: u64,
) -> Vec<f64> {
    let rt = runtime();
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds {
        for (samples, (_, f)) in ns.iter_mut().zip(variants) {
            samples.push(f(&rt, iters).as_nanos() as f64 / iters as f64);
        }
    }
    ns.iter_mut().map(|samples| median(samples)).collect()
}

/// The median of `samples` (the upper one of an even count).
///
/// # Panics
///
/// If `samples` is empty.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
