//! What a retry reports: one tracing event and one counter per finished
//! attempt, and a histogram of the waits, with the names of
//! [`crate::observability`].

use std::sync::Arc;
use std::time::Duration;

use crate::observability::{DEFAULT_NAME, latency_us};
#[cfg(feature = "metrics")]
use crate::observability::{RETRY_DECISIONS, RETRY_WAIT, record};

/// What the layer made of a finished attempt: the `outcome` label and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The answer, returned.
    Done,
    /// Another attempt follows, after a wait.
    Retried,
    /// Worth a retry, but `max_attempts` were made.
    Exhausted,
    /// Worth a retry, but the budget is spent.
    BudgetExhausted,
    /// Worth a retry, but no attempt could finish before the deadline.
    Deadline,
    /// Worth a retry, but the request cannot be sent again.
    NotReplayable,
    /// The server asked for a wait longer than `max_retry_after`.
    RetryAfterTooLong,
    /// Not to be retried (an open breaker, a local refusal, a server's no).
    Stopped,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 8] = [
        Self::Done,
        Self::Retried,
        Self::Exhausted,
        Self::BudgetExhausted,
        Self::Deadline,
        Self::NotReplayable,
        Self::RetryAfterTooLong,
        Self::Stopped,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retried => "retried",
            Self::Exhausted => "exhausted",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Deadline => "deadline",
            Self::NotReplayable => "not_replayable",
            Self::RetryAfterTooLong => "retry_after_too_long",
            Self::Stopped => "stopped",
        }
    }
}

/// A retry's name and metric keys, built once per layer.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    decisions: [metrics::Key; 8],
    #[cfg(feature = "metrics")]
    wait: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            decisions: Outcome::ALL
                .map(|o| record::key(RETRY_DECISIONS, &name, &[("outcome", o.as_str())])),
            #[cfg(feature = "metrics")]
            wait: record::key(RETRY_WAIT, &name, &[]),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Attempt number `attempt` (from 1) finished as `outcome`, after
    /// `latency` when the clock was read for it.
    #[inline]
    pub(crate) fn attempt(&self, outcome: Outcome, attempt: u32, latency: Option<Duration>) {
        #[cfg(feature = "metrics")]
        record::increment(&self.decisions[outcome as usize]);
        if outcome == Outcome::Done {
            if tracing::level_enabled!(tracing::Level::TRACE) {
                self.done_event(attempt, latency);
            }
        } else if tracing::level_enabled!(tracing::Level::DEBUG) {
            self.decision_event(outcome, attempt, latency);
        }
    }

    #[cold]
    #[inline(never)]
    fn done_event(&self, attempt: u32, latency: Option<Duration>) {
        tracing::trace!(
            layer = "retry",
            name = &*self.name,
            outcome = Outcome::Done.as_str(),
            attempt,
            latency_us = latency.map_or(0, latency_us),
            "retry: answer returned"
        );
    }

    #[cold]
    #[inline(never)]
    fn decision_event(&self, outcome: Outcome, attempt: u32, latency: Option<Duration>) {
        tracing::debug!(
            layer = "retry",
            name = &*self.name,
            outcome = outcome.as_str(),
            attempt,
            latency_us = latency.map_or(0, latency_us),
            "retry: attempt failed"
        );
    }

    /// A wait of `wait` before attempt number `next`.
    #[cold]
    pub(crate) fn wait(&self, wait: Duration, next: u32) {
        #[cfg(feature = "metrics")]
        record::histogram(&self.wait, wait.as_secs_f64());
        tracing::debug!(
            layer = "retry",
            name = &*self.name,
            attempt = next,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "retry: waiting before the next attempt"
        );
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::Outcome;

    #[test]
    fn each_outcome_finds_its_own_metric_key() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
    }
}
