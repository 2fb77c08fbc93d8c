//! Cost per call of a retry layer on a first-try success, over a bare
//! always-ready service: tower's `Retry` with a trivial policy, tower's
//! `Retry` whose policy deposits in a `TpsBudget` on each success (a mutex
//! and a clock read), and palisade's `Retry` with its budget (the default:
//! a success costs one atomic load while the budget is full). Every variant
//! takes the same request type, a small job that is cloned for a retry.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the added cost per call and the ratios (the
//! target: palisade's added cost <= 10 ns).
//!
//! `cargo bench -p palisade-benches --no-default-features --features retry --bench retry`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::attempt::{ErrorIsRetryable, Replay};
use palisade::retry::RetryLayer;
use palisade::timeout::{Deadline, DeadlineRequest};
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use tower::retry::Policy;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service, ServiceExt};

/// The request: a job id, and the deadline palisade's retry reads (none
/// here).
#[derive(Clone, Debug)]
struct Job {
    id: u64,
    deadline: Option<Deadline>,
}

impl Replay for Job {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl DeadlineRequest for Job {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

/// An always-ready service answering at once.
#[derive(Clone, Copy)]
struct Bare;

impl Service<Job> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        ready(Ok(job.id))
    }
}

/// tower's retry policy that never retries: the floor of tower's `Retry`.
#[derive(Clone, Copy)]
struct Trivial;

impl Policy<Job, u64, Infallible> for Trivial {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Job, _: &mut Result<u64, Infallible>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Job) -> Option<Job> {
        Some(req.clone())
    }
}

/// tower's retry policy with a budget, as a real one keeps: each success
/// deposits.
#[derive(Clone)]
struct Budgeted(Arc<TpsBudget>);

impl Policy<Job, u64, Infallible> for Budgeted {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Job, result: &mut Result<u64, Infallible>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(e) => match *e {},
        }
    }

    fn clone_request(&mut self, req: &Job) -> Option<Job> {
        Some(req.clone())
    }
}

/// `iters` calls of `ready().await` + `call().await` on one task.
async fn calls<S>(mut svc: S, iters: u64) -> Duration
where
    S: Service<Job>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        let ready = svc.ready().await.unwrap();
        let job = Job {
            id: black_box(i),
            deadline: None,
        };
        let _ = black_box(ready.call(job).await);
    }
    start.elapsed()
}

fn variants() -> Vec<(&'static str, Run)> {
    vec![
        ("bare", run(|n| calls(Bare, n))),
        (
            "tower_retry_trivial_policy",
            run(|n| calls(tower::retry::RetryLayer::new(Trivial).layer(Bare), n)),
        ),
        (
            "tower_retry_tps_budget",
            run(|n| {
                let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
                calls(
                    tower::retry::RetryLayer::new(Budgeted(budget)).layer(Bare),
                    n,
                )
            }),
        ),
        (
            "palisade_retry_budget",
            run(|n| calls(RetryLayer::new(ErrorIsRetryable).layer(Bare), n)),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "retry", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 1_000_000;
    let m = interleaved_medians(&variants(), ROUNDS, ITERS);
    let (bare, trivial, tps, ours) = (m[0], m[1], m[2], m[3]);
    println!(
        "\nretry summary, first-try success (median of {ROUNDS} interleaved rounds of {ITERS} calls)"
    );
    println!("  bare service                      {bare:7.2} ns/call");
    println!(
        "  tower Retry, trivial policy       {trivial:7.2} ns/call, added {:6.2} ns",
        trivial - bare
    );
    println!(
        "  tower Retry + TpsBudget deposit   {tps:7.2} ns/call, added {:6.2} ns",
        tps - bare
    );
    println!(
        "  palisade Retry, with its budget   {ours:7.2} ns/call, added {:6.2} ns (target <= 10)",
        ours - bare
    );
    println!(
        "  ratio palisade/tower+TpsBudget added {:7.2}",
        (ours - bare) / (tps - bare)
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
