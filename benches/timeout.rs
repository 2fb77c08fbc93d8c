//! Added cost per call of palisade's timeout over a bare always-ready
//! service, against tower's `timeout::Timeout`.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the added cost per call and palisade's ratio to
//! tower's (the target is <= 0.7: an inner future ready at once pays for no
//! timer).
//!
//! `cargo bench -p palisade-benches --no-default-features --features timeout --bench timeout`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::timeout::TimeoutLayer;
use palisade_benches::{Run, bench_group, interleaved_medians, median, run};
use tower::{Layer, Service, ServiceExt, service_fn};

const BUDGET: Duration = Duration::from_secs(3);

fn bare() -> impl Service<u64, Response = u64, Error = Infallible> + Clone {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x) })
}

fn bare_http() -> impl Service<http::Request<u64>, Response = u64, Error = Infallible> + Clone {
    service_fn(|req: http::Request<u64>| async move { Ok::<_, Infallible>(*req.body()) })
}

/// `iters` calls of `ready().await` + `call().await` on one task.
async fn calls<S, R>(mut svc: S, make: impl Fn(u64) -> R, iters: u64) -> Duration
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        let ready = svc.ready().await.unwrap();
        let _ = black_box(ready.call(make(black_box(i))).await);
    }
    start.elapsed()
}

fn id(i: u64) -> u64 {
    i
}

fn request(i: u64) -> http::Request<u64> {
    http::Request::new(i)
}

fn variants() -> Vec<(&'static str, Run)> {
    vec![
        ("bare", run(|n| calls(bare(), id, n))),
        (
            "tower_timeout",
            run(|n| {
                calls(
                    tower::timeout::TimeoutLayer::new(BUDGET).layer(bare()),
                    id,
                    n,
                )
            }),
        ),
        (
            "palisade_timeout",
            run(|n| calls(TimeoutLayer::new(BUDGET).layer(bare()), id, n)),
        ),
        ("bare_http", run(|n| calls(bare_http(), request, n))),
        (
            "palisade_per_request_http",
            run(|n| {
                calls(
                    TimeoutLayer::new(BUDGET).per_request().layer(bare_http()),
                    request,
                    n,
                )
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "timeout", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 1_000_000;
    let variants = variants();
    let m = interleaved_medians(&variants, ROUNDS, ITERS);
    let (bare, tower, ours, bare_http, per_request) = (m[0], m[1], m[2], m[3], m[4]);
    let clock = {
        let mut v: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..ITERS {
                    black_box(tokio::time::Instant::now());
                }
                start.elapsed().as_nanos() as f64 / ITERS as f64
            })
            .collect();
        median(&mut v)
    };
    println!("\ntimeout summary (median of {ROUNDS} interleaved rounds of {ITERS} calls)");
    println!("  bare service                {bare:7.2} ns/call");
    println!(
        "  tower::timeout::Timeout     {tower:7.2} ns/call, added {:6.2} ns",
        tower - bare
    );
    println!(
        "  palisade Timeout (fixed)    {ours:7.2} ns/call, added {:6.2} ns",
        ours - bare
    );
    println!(
        "  ratio palisade/tower added  {:7.2} (target <= 0.70)",
        (ours - bare) / (tower - bare)
    );
    println!("  one tokio::time::Instant::now() {clock:5.2} ns");
    println!("  bare service, http request  {bare_http:7.2} ns/call");
    println!(
        "  palisade per_request (http) {per_request:7.2} ns/call, added {:6.2} ns",
        per_request - bare_http
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
