//! Uncontended cost per call of palisade's throttle over a bare
//! always-ready HTTP service: while the upstream sets no limit (the
//! common case), and while every answer carries a `RateLimit` field with
//! plenty left (each answer parsed and learnt). tower's `limit::RateLimit`
//! (a local rate limit that never binds here) is the reference cost of a
//! limiter on the call path.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the added cost per call.
//!
//! `cargo bench -p palisade-benches --no-default-features --features throttle --bench throttle`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use http::{HeaderValue, Request, Response};
use palisade::throttle::ThrottleLayer;
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use tower::{Layer, Service, ServiceExt};

/// An always-ready upstream answering at once, with `RateLimit` or without.
#[derive(Clone, Copy)]
struct Bare {
    ratelimit: bool,
}

impl Service<Request<()>> for Bare {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut response = Response::new(());
        if self.ratelimit {
            response.headers_mut().insert(
                "ratelimit",
                HeaderValue::from_static("\"default\";r=1000000000;t=1"),
            );
        }
        ready(Ok(response))
    }
}

/// `iters` calls of `ready().await` + `call().await` on one task.
async fn calls<S>(mut svc: S, iters: u64) -> Duration
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.unwrap();
        let _ = black_box(ready.call(black_box(Request::new(()))).await);
    }
    start.elapsed()
}

fn variants() -> Vec<(&'static str, Run)> {
    let plain = Bare { ratelimit: false };
    let fields = Bare { ratelimit: true };
    vec![
        ("bare", run(move |n| calls(plain, n))),
        (
            "tower_rate_limit",
            // Built on the runtime: tower's RateLimit arms a timer.
            run(move |n| async move {
                let layer = tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1));
                calls(layer.layer(plain), n).await
            }),
        ),
        (
            "palisade_throttle",
            run(move |n| calls(ThrottleLayer::new().layer(plain), n)),
        ),
        ("bare_with_ratelimit", run(move |n| calls(fields, n))),
        (
            "palisade_throttle_with_ratelimit",
            run(move |n| calls(ThrottleLayer::new().layer(fields), n)),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "throttle", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 500_000;
    let m = interleaved_medians(&variants(), ROUNDS, ITERS);
    let (bare, tower, ours, bare_rl, ours_rl) = (m[0], m[1], m[2], m[3], m[4]);
    println!("\nthrottle summary (median of {ROUNDS} interleaved rounds of {ITERS} calls)");
    println!("  bare service                      {bare:7.2} ns/call");
    println!(
        "  tower RateLimit (never binding)   {tower:7.2} ns/call, added {:6.2} ns",
        tower - bare
    );
    println!(
        "  palisade Throttle, no fields      {ours:7.2} ns/call, added {:6.2} ns",
        ours - bare
    );
    println!("  bare service, RateLimit answers   {bare_rl:7.2} ns/call");
    println!(
        "  palisade Throttle, RateLimit      {ours_rl:7.2} ns/call, added {:6.2} ns",
        ours_rl - bare_rl
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
