//! What a timeout reports: one tracing event and one counter per call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

#[cfg(feature = "metrics")]
use crate::observability::{TIMEOUT_CALLS, record};

/// A timeout's name and metric keys, built once per layer and shared by its
/// services and their futures.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    completed: metrics::Key,
    #[cfg(feature = "metrics")]
    timed_out: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            completed: record::key(TIMEOUT_CALLS, &name, &[("outcome", "completed")]),
            #[cfg(feature = "metrics")]
            timed_out: record::key(TIMEOUT_CALLS, &name, &[("outcome", "timed_out")]),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(crate::observability::DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The inner service answered (`Ok` or `Err`) within the budget, which
    /// started at `deadline - budget`.
    #[inline]
    pub(crate) fn completed(&self, deadline: Instant, budget: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.completed);
        // The clock is read only when the event is enabled.
        tracing::trace!(
            layer = "timeout",
            name = &*self.name,
            outcome = "completed",
            latency_us = deadline.checked_sub(budget).map_or(0, |start| micros(
                Instant::now().saturating_duration_since(start)
            )),
            "request completed in time"
        );
    }

    /// The budget ran out (or, per request, had run out before the call).
    pub(crate) fn timed_out(&self, budget: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.timed_out);
        tracing::debug!(
            layer = "timeout",
            name = &*self.name,
            outcome = "timed_out",
            latency_us = micros(budget),
            budget_ms = budget.as_millis() as u64,
            "request timed out"
        );
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
