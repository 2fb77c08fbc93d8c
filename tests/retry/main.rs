#![cfg(all(feature = "retry", feature = "http"))]
//! Retry layer: backoff, budget, classification, Retry-After, deadlines and
//! per-try timeouts, replay, readiness, drop safety and what it reports, all
//! on paused time.

#[path = "../support/mod.rs"]
mod support;

mod backoff;
mod budget;
mod classify;
mod deadline;
mod drop_safety;
mod grpc;
mod http;
mod observe;
mod ready;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade::attempt::Replay;
use palisade::retry::{Backoff, Jitter};
use palisade::timeout::{Deadline, DeadlineRequest};
use tower::{Service, service_fn};

const MS: Duration = Duration::from_millis(1);

/// A count.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a non-zero count")
}

/// Waits of 1, 2, 4 .. 10 ms, no jitter: short and known.
fn quick_backoff() -> Backoff {
    Backoff::exponential(MS, 10 * MS)
        .unwrap()
        .jitter(Jitter::None)
}

/// A request type of its own (not HTTP): a job that may or may not be
/// repeated, and can carry a deadline.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    id: u32,
    repeatable: bool,
    deadline: Option<Deadline>,
}

impl Job {
    fn new(id: u32) -> Self {
        Self {
            id,
            repeatable: true,
            deadline: None,
        }
    }
}

impl Replay for Job {
    fn replay(&self) -> Option<Self> {
        self.repeatable.then(|| self.clone())
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

/// A job service whose `n`th call (from 0) answers `script(n)`; counts its
/// calls.
fn scripted<E: Send + 'static>(
    script: impl Fn(usize) -> Result<&'static str, E> + Send + Sync + 'static,
) -> (
    impl Service<Job, Response = &'static str, Error = E, Future: Send> + Clone + Send + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let script = Arc::new(script);
    let svc = service_fn(move |_job: Job| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let answer = script(n);
        async move { answer }
    });
    (svc, calls)
}

fn io(kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::from(kind)
}
