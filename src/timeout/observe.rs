//! What a timeout reports: one tracing event and one counter per call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::observability::latency_us;
#[cfg(feature = "metrics")]
use crate::observability::{TIMEOUT_CALLS, record};

/// A timeout's name and metric keys, shared by its services and their
/// futures.
///
/// Interned by name for the life of the process, so a future holds a plain
/// reference, not an `Arc` whose clone and drop would add two atomic
/// read-modify-writes to every call. One name keeps one observer, a few
/// hundred bytes, as a recorder keeps one series per name anyway; names come
/// from configuration, not from requests.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    completed: metrics::Key,
    #[cfg(feature = "metrics")]
    timed_out: metrics::Key,
}

impl Observer {
    /// The observer of `name`.
    pub(crate) fn named(name: Arc<str>) -> &'static Self {
        static OBSERVERS: Mutex<BTreeMap<Arc<str>, &'static Observer>> =
            Mutex::new(BTreeMap::new());
        let mut observers = OBSERVERS.lock().unwrap_or_else(PoisonError::into_inner);
        observers
            .entry(name.clone())
            .or_insert_with(|| Box::leak(Box::new(Self::new(name))))
    }

    /// The observer of [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME).
    pub(crate) fn unnamed() -> &'static Self {
        static DEFAULT: OnceLock<&'static Observer> = OnceLock::new();
        DEFAULT.get_or_init(|| Self::named(Arc::from(crate::observability::DEFAULT_NAME)))
    }

    fn new(name: Arc<str>) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            completed: record::key(TIMEOUT_CALLS, &name, &[("outcome", "completed")]),
            #[cfg(feature = "metrics")]
            timed_out: record::key(TIMEOUT_CALLS, &name, &[("outcome", "timed_out")]),
            name,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The inner service answered (`Ok` or `Err`) within the budget, which
    /// started at `deadline - budget` (the call).
    #[inline]
    pub(crate) fn completed(&self, deadline: Option<Instant>, budget: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.completed);
        // Only the global level is checked inline: the event's own code kept
        // out of the caller keeps the fast path small.
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.trace_completed(deadline, budget);
        }
    }

    #[cold]
    #[inline(never)]
    fn trace_completed(&self, deadline: Option<Instant>, budget: Duration) {
        // The clock is read only when the event is enabled.
        let latency = deadline
            .and_then(|deadline| deadline.checked_sub(budget))
            .map_or(0, |start| {
                latency_us(Instant::now().saturating_duration_since(start))
            });
        tracing::trace!(
            layer = "timeout",
            name = &*self.name,
            outcome = "completed",
            latency_us = latency,
            "request completed in time"
        );
    }

    /// The budget ran out (or, per request, had run out before the call).
    #[cold]
    pub(crate) fn timed_out(&self, budget: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.timed_out);
        tracing::debug!(
            layer = "timeout",
            name = &*self.name,
            outcome = "timed_out",
            latency_us = latency_us(budget),
            budget_ms = budget.as_millis() as u64,
            "request timed out"
        );
    }
}
