#![cfg(all(feature = "hedge", feature = "http", feature = "metrics"))]
//! Hedge: the race between a slow first attempt and its hedges, what is
//! hedged (replay, budget, window), cancellation at every point, and what
//! the layer reports.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/recording.rs"]
mod recording;

mod budget;
mod drop_safety;
mod grpc;
mod metrics;
mod race;
mod ready;
mod replay;
mod window;

use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade::attempt::{ErrorIsRetryable, Replay};
use palisade::hedge::{Hedge, HedgeLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A count.
pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a non-zero count")
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request that may always be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job;

impl Replay for Job {
    fn replay(&self) -> Option<Self> {
        Some(Job)
    }
}

/// What one attempt does: answers `Ok` or fails (a connection reset, worth
/// another attempt) after `ms` milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
    Ok(u64),
    Fail(u64),
}

/// What the backend saw: attempts started, dropped before they finished,
/// and finished.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    started: AtomicUsize,
    cancelled: AtomicUsize,
    finished: AtomicUsize,
}

impl Counts {
    pub(crate) fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    pub(crate) fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub(crate) fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
    /// Attempts whose future is still alive somewhere.
    pub(crate) fn alive(&self) -> usize {
        self.started() - self.cancelled() - self.finished()
    }
}

/// Counts an attempt dropped before it finished.
struct Guard {
    counts: Arc<Counts>,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.counts.finished
        } else {
            &self.counts.cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A backend whose attempts follow `plan` in call order, then `rest`; each
/// answers its call number (0 for the first call).
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) plan: Arc<Mutex<VecDeque<Plan>>>,
    pub(crate) counts: Arc<Counts>,
}

impl Backend {
    pub(crate) fn new() -> Self {
        Self {
            plan: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// The next attempts do this, in order.
    pub(crate) fn then(&self, plans: impl IntoIterator<Item = Plan>) {
        self.plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(plans);
    }

    pub(crate) fn service<R: Send + 'static>(
        &self,
        rest: Plan,
    ) -> impl Service<R, Response = usize, Error = io::Error, Future: Send> + Clone + use<R> {
        let backend = self.clone();
        service_fn(move |_: R| {
            let plan = backend
                .plan
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front()
                .unwrap_or(rest);
            let n = backend.counts.started.fetch_add(1, Ordering::SeqCst);
            let guard = Guard {
                counts: backend.counts.clone(),
                done: false,
            };
            async move {
                // The whole guard moves in, not only the field written below.
                let mut guard = guard;
                let (ms, ok) = match plan {
                    Plan::Ok(ms) => (ms, true),
                    Plan::Fail(ms) => (ms, false),
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.done = true;
                if ok {
                    Ok(n)
                } else {
                    Err(io::Error::from(io::ErrorKind::ConnectionReset))
                }
            }
        })
    }
}

pub(crate) type Svc =
    Hedge<tower::util::BoxCloneSyncService<Job, usize, io::Error>, ErrorIsRetryable>;

/// The layer of most tests: hedges after the window's 95th percentile once
/// it holds 10 latencies.
pub(crate) fn layer() -> HedgeLayer<ErrorIsRetryable> {
    HedgeLayer::new(ErrorIsRetryable).min_samples(nz(10))
}

/// `layer` around a fresh backend whose attempts take 10 ms unless planned.
pub(crate) fn setup(layer: &HedgeLayer<ErrorIsRetryable>) -> (Svc, Backend) {
    let backend = Backend::new();
    let inner = tower::util::BoxCloneSyncService::new(backend.service::<Job>(Plan::Ok(10)));
    (layer.layer(inner), backend)
}

/// Sends `n` requests one after another.
pub(crate) async fn warm<S>(svc: &S, n: usize)
where
    S: Service<Job> + Clone,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        svc.clone().oneshot(Job).await.expect("a warm-up answer");
    }
}
