//! What an adaptive limiter reports: one tracing event and one counter per
//! decision, an event and a gauge per limit change, with the names of
//! [`crate::observability`].

use std::sync::Arc;

use crate::load_shed::{Priority, Reason};
use crate::observability::DEFAULT_NAME;
#[cfg(feature = "metrics")]
use crate::observability::{ADAPTIVE_CONCURRENCY_CALLS, ADAPTIVE_CONCURRENCY_LIMIT, record};

/// The `outcome` label and field; a refusal is labelled by its
/// [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Admitted,
    Shed(Reason),
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 5] = [
        Self::Admitted,
        Self::Shed(Reason::Full),
        Self::Shed(Reason::Waited),
        Self::Shed(Reason::Displaced),
        Self::Shed(Reason::Stale),
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Shed(reason) => reason.as_str(),
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    #[cfg(feature = "metrics")]
    const fn index(self) -> usize {
        match self {
            Self::Admitted => 0,
            Self::Shed(reason) => 1 + reason as usize,
        }
    }
}

/// A limiter's name and metric keys, built once per layer.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    calls: [metrics::Key; 5],
    #[cfg(feature = "metrics")]
    limit: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            calls: Outcome::ALL.map(|o| {
                record::key(
                    ADAPTIVE_CONCURRENCY_CALLS,
                    &name,
                    &[("outcome", o.as_str())],
                )
            }),
            #[cfg(feature = "metrics")]
            limit: record::key(ADAPTIVE_CONCURRENCY_LIMIT, &name, &[]),
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

    pub(crate) fn admitted(&self, priority: Priority) {
        self.count(Outcome::Admitted);
        tracing::trace!(
            layer = "adaptive_concurrency",
            name = &*self.name,
            outcome = Outcome::Admitted.as_str(),
            priority = priority.as_str(),
            "adaptive concurrency admitted"
        );
    }

    pub(crate) fn shed(&self, priority: Priority, reason: Reason) {
        let outcome = Outcome::Shed(reason);
        self.count(outcome);
        tracing::debug!(
            layer = "adaptive_concurrency",
            name = &*self.name,
            outcome = outcome.as_str(),
            priority = priority.as_str(),
            "adaptive concurrency shed"
        );
    }

    pub(crate) fn limit_changed(&self, limit: u32, previous: u32) {
        #[cfg(feature = "metrics")]
        record::set_gauge(&self.limit, f64::from(limit));
        tracing::debug!(
            layer = "adaptive_concurrency",
            name = &*self.name,
            limit,
            previous,
            "adaptive concurrency limit changed"
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
