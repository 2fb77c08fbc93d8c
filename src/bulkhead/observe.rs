//! What a bulkhead reports: one tracing event and one counter per decision,
//! with the names of [`crate::observability`].

use std::sync::Arc;

use crate::load_shed::{Priority, Reason};
#[cfg(feature = "metrics")]
use crate::observability::{BULKHEAD_CALLS, record};
use crate::observability::{DEFAULT_NAME, ErrorChain, redact_key};
use crate::store::StoreError;

/// The `outcome` label and field; a refusal is labelled by its
/// [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Admitted,
    Shed(Reason),
    FailedOpen,
    FailedClosed,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 7] = [
        Self::Admitted,
        Self::Shed(Reason::Full),
        Self::Shed(Reason::Waited),
        Self::Shed(Reason::Displaced),
        Self::Shed(Reason::Stale),
        Self::FailedOpen,
        Self::FailedClosed,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Shed(reason) => reason.as_str(),
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    #[cfg(feature = "metrics")]
    const fn index(self) -> usize {
        match self {
            Self::Admitted => 0,
            Self::Shed(reason) => 1 + reason as usize,
            Self::FailedOpen => 5,
            Self::FailedClosed => 6,
        }
    }
}

/// A bulkhead's name and metric keys, built once per layer.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    calls: [metrics::Key; 7],
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            calls: Outcome::ALL
                .map(|o| record::key(BULKHEAD_CALLS, &name, &[("outcome", o.as_str())])),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn count(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        record::increment(&self.calls[outcome.index()]);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    #[inline]
    pub(crate) fn admitted(&self, key: &str, priority: Priority) {
        self.count(Outcome::Admitted);
        // The event out of line: with TRACE off, an admission costs one
        // check of the global level and no stack frame for the event.
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.admitted_event(key, priority);
        }
    }

    #[cold]
    #[inline(never)]
    fn admitted_event(&self, key: &str, priority: Priority) {
        tracing::trace!(
            layer = "bulkhead",
            name = &*self.name,
            key = %redact_key(key),
            outcome = Outcome::Admitted.as_str(),
            priority = priority.as_str(),
            "bulkhead admitted"
        );
    }

    pub(crate) fn shed(&self, key: &str, priority: Priority, reason: Reason) {
        let outcome = Outcome::Shed(reason);
        self.count(outcome);
        tracing::debug!(
            layer = "bulkhead",
            name = &*self.name,
            key = %redact_key(key),
            outcome = outcome.as_str(),
            priority = priority.as_str(),
            "bulkhead shed"
        );
    }

    pub(crate) fn failed(&self, key: &str, error: &StoreError, closed: bool) {
        let outcome = if closed {
            Outcome::FailedClosed
        } else {
            Outcome::FailedOpen
        };
        self.count(outcome);
        tracing::warn!(
            layer = "bulkhead",
            name = &*self.name,
            key = %redact_key(key),
            outcome = outcome.as_str(),
            error = %ErrorChain(error),
            "bulkhead store failed"
        );
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::Outcome;

    #[test]
    fn each_outcome_finds_its_own_metric_key() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
    }
}
