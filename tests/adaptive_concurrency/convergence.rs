//! The limit settles near a simulated service's capacity and follows it
//! down when the capacity halves.
//!
//! The service serves 32 requests at a time, 10 ms each; more wait inside
//! it (a semaphore), so the latency the limiter measures grows with
//! whatever it lets through past the capacity. 200 callers loop on it, far
//! more than it can serve: unprotected, a request would take some 70 ms.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd, Algorithm, Gradient2};
use palisade::load_shed::Queue;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const CAPACITY: u32 = 32;
const CALLERS: usize = 200;
/// When the capacity halves, and when the run ends.
const HALVED_AT: Duration = Duration::from_secs(4);
const END: Duration = Duration::from_secs(8);

/// What a run saw: the limit every 10 ms, and each request's latency inside
/// the service, both by time since the start.
#[derive(Debug, Default)]
struct Trace {
    limits: Vec<(Duration, u32)>,
    latencies: Vec<(Duration, Duration)>,
}

impl Trace {
    fn limits(&self, from: Duration, to: Duration) -> Vec<u32> {
        self.limits
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|&(_, l)| l)
            .collect()
    }

    fn p99(&self, from: Duration, to: Duration) -> Duration {
        let mut latencies: Vec<Duration> = self
            .latencies
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|&(_, l)| l)
            .collect();
        assert!(
            latencies.len() > 1_000,
            "too few requests: {}",
            latencies.len()
        );
        latencies.sort();
        latencies[latencies.len() * 99 / 100]
    }

    /// When the limit was last above `limit` before `to`.
    fn last_above(&self, limit: u32, to: Duration) -> Option<Duration> {
        self.limits
            .iter()
            .rev()
            .find(|&&(t, l)| t < to && l > limit)
            .map(|&(t, _)| t)
    }
}

async fn run(algorithm: impl Algorithm) -> Trace {
    let start = Instant::now();
    let trace = Arc::new(Mutex::new(Trace::default()));
    let capacity = Arc::new(Semaphore::new(CAPACITY as usize));
    let layer = AdaptiveConcurrencyLayer::new(algorithm)
        .queue(Queue::new(CALLERS, Duration::from_secs(1)).unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn({
        let trace = trace.clone();
        let capacity = capacity.clone();
        move |()| {
            let trace = trace.clone();
            let capacity = capacity.clone();
            async move {
                let called = Instant::now();
                let permit = capacity.acquire().await.unwrap();
                tokio::time::sleep(10 * MS).await;
                drop(permit);
                let latency = called.elapsed();
                let at = Instant::now() - start;
                trace.lock().unwrap().latencies.push((at, latency));
                Ok::<_, Infallible>(())
            }
        }
    }));

    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let svc = svc.clone();
        callers.push(tokio::spawn(async move {
            while start.elapsed() < END {
                if svc.clone().oneshot(()).await.is_err() {
                    // Shed: come back a little later, as a client would.
                    tokio::time::sleep(MS).await;
                }
            }
        }));
    }
    tokio::spawn({
        let capacity = capacity.clone();
        async move {
            tokio::time::sleep(HALVED_AT).await;
            capacity.acquire_many(CAPACITY / 2).await.unwrap().forget();
        }
    });
    while start.elapsed() < END {
        trace
            .lock()
            .unwrap()
            .limits
            .push((start.elapsed(), handle.limit()));
        tokio::time::sleep(10 * MS).await;
    }
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    drop(svc);
    Arc::try_unwrap(trace).unwrap().into_inner().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Settles within `16..=64` by 2 s with a p99 below 30 ms; after the
/// capacity halves, the limit is at most 32 within `follow`, and stays in
/// `8..=32` with a p99 below 40 ms (unprotected: some 140 ms).
fn assert_follows_capacity(trace: &Trace, follow: Duration) {
    let settled = trace.limits(secs(2.0), HALVED_AT);
    let (min, max) = (settled.iter().min(), settled.iter().max());
    assert!(
        settled.iter().all(|l| (16..=64).contains(l)),
        "at capacity 32 the limit went from {min:?} to {max:?}: {:?}",
        trace.limits
    );
    let p99 = trace.p99(secs(2.0), HALVED_AT);
    assert!(p99 < 30 * MS, "p99 at capacity 32: {p99:?}");

    let last = trace.last_above(32, END).unwrap_or(Duration::ZERO);
    assert!(
        last < HALVED_AT + follow,
        "still above 32 at {last:?}: {:?}",
        trace.limits
    );
    let halved = trace.limits(HALVED_AT + follow, END);
    let (min, max) = (halved.iter().min(), halved.iter().max());
    assert!(
        halved.iter().all(|l| (8..=32).contains(l)),
        "at capacity 16 the limit went from {min:?} to {max:?}: {:?}",
        trace.limits
    );
    let p99 = trace.p99(HALVED_AT + follow, END);
    assert!(p99 < 40 * MS, "p99 at capacity 16: {p99:?}");
}

#[tokio::test(start_paused = true)]
async fn aimd_settles_near_the_capacity_and_follows_it_down() {
    let aimd = Aimd::new()
        .bounds(1, 20, 1_000)
        .unwrap()
        .latency_threshold(15 * MS);
    let trace = run(aimd).await;
    assert_follows_capacity(&trace, secs(0.5));
}

#[tokio::test(start_paused = true)]
async fn gradient2_settles_near_the_capacity_and_follows_it_down() {
    let trace = run(Gradient2::new()).await;
    assert_follows_capacity(&trace, secs(1.0));
}
