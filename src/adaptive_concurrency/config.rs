//! What an adaptive limiter's layer hands its services, and the state they
//! share.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::algorithm::{Algorithm, Sample};
use super::observe::Observer;
use crate::load_shed::gate::Gate;

/// [`AdaptiveConcurrencyLayer::retry_after`](super::AdaptiveConcurrencyLayer::retry_after)'s
/// default: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Config<P> {
    pub(crate) priority: P,
    pub(crate) retry_after: Duration,
    pub(crate) observer: Arc<Observer>,
    pub(crate) shared: Arc<Shared>,
}

/// The gate and the algorithm that moves its limit: made once, by the
/// layer's `new`, shared by every service and handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) gate: Arc<Gate>,
    learner: Mutex<Learner>,
    started: Instant,
}

struct Learner {
    algorithm: Box<dyn Algorithm>,
    limit: u32,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(algorithm: Box<dyn Algorithm>) -> Arc<Self> {
        let limit = algorithm.initial_limit().max(1);
        Arc::new(Self {
            gate: crate::load_shed::gate::Gate::new(limit, None),
            learner: Mutex::new(Learner { algorithm, limit }),
            started: Instant::now(),
        })
    }

    /// Feeds one sample to the algorithm; on a new limit, sets it on the
    /// gate and reports it.
    pub(crate) fn learn(&self, sample: Sample, observer: &Observer) {
        let now = self.started.elapsed();
        // Nothing under the lock can leave the learner half changed.
        let mut learner = self.learner.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = learner.algorithm.update(sample, now).max(1);
        let previous = learner.limit;
        if limit == previous {
            return;
        }
        learner.limit = limit;
        // Set under the learner's lock, so two changes reach the gate in
        // the order the algorithm made them.
        self.gate.set_limit(limit);
        drop(learner);
        observer.limit_changed(limit, previous);
    }
}
