//! What a throttle reports: one tracing event and one counter per call, and
//! a histogram of waits, with the names of [`crate::observability`].

use std::sync::Arc;
use std::time::Duration;

use super::schedule::Change;
use crate::observability::{DEFAULT_NAME, latency_us};
#[cfg(feature = "metrics")]
use crate::observability::{THROTTLE_CALLS, THROTTLE_WAIT, record};

/// The `outcome` label and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Sent without waiting.
    Sent,
    /// Sent after waiting for the upstream's schedule.
    Waited,
    /// Refused: the wait does not fit the deadline or the maximum wait.
    Throttled,
    /// Refused by the adaptive throttle.
    Rejected,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 4] = [Self::Sent, Self::Waited, Self::Throttled, Self::Rejected];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Waited => "waited",
            Self::Throttled => "throttled",
            Self::Rejected => "rejected",
        }
    }
}

/// A throttle's name and metric keys, built once per layer.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    calls: [metrics::Key; 4],
    #[cfg(feature = "metrics")]
    wait: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            calls: Outcome::ALL
                .map(|o| record::key(THROTTLE_CALLS, &name, &[("outcome", o.as_str())])),
            #[cfg(feature = "metrics")]
            wait: record::key(THROTTLE_WAIT, &name, &[]),
            name,
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn count(&self, outcome: Outcome) {
        // `Outcome` is in `ALL` order.
        #[cfg(feature = "metrics")]
        record::increment(&self.calls[outcome as usize]);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    #[inline]
    pub(crate) fn sent(&self) {
        self.count(Outcome::Sent);
        // With TRACE off, a call costs one check of the global level.
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.sent_event();
        }
    }

    #[cold]
    #[inline(never)]
    fn sent_event(&self) {
        tracing::trace!(
            layer = "throttle",
            name = &*self.name,
            outcome = Outcome::Sent.as_str(),
            latency_us = 0u64,
            "throttle sent"
        );
    }

    pub(crate) fn waited(&self, wait: Duration) {
        self.count(Outcome::Waited);
        #[cfg(feature = "metrics")]
        record::histogram(&self.wait, wait.as_secs_f64());
        tracing::debug!(
            layer = "throttle",
            name = &*self.name,
            outcome = Outcome::Waited.as_str(),
            latency_us = latency_us(wait),
            "throttle waited for the upstream"
        );
    }

    pub(crate) fn throttled(&self, waited: Duration, retry_after: Duration) {
        self.count(Outcome::Throttled);
        tracing::debug!(
            layer = "throttle",
            name = &*self.name,
            outcome = Outcome::Throttled.as_str(),
            latency_us = latency_us(waited),
            retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            "throttled: the upstream's schedule does not fit the request's time"
        );
    }

    pub(crate) fn rejected(&self, probability: f64) {
        self.count(Outcome::Rejected);
        tracing::debug!(
            layer = "throttle",
            name = &*self.name,
            outcome = Outcome::Rejected.as_str(),
            latency_us = 0u64,
            probability,
            "rejected by the adaptive throttle"
        );
    }

    /// The upstream changed the schedule.
    pub(crate) fn learned(&self, change: Change) {
        match change {
            Change::None => {}
            Change::Blocked(wait) => tracing::debug!(
                layer = "throttle",
                name = &*self.name,
                pause_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "the upstream asked for a pause"
            ),
            Change::Paced(spacing) => tracing::trace!(
                layer = "throttle",
                name = &*self.name,
                spacing_ms = u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX),
                "the upstream's quota paces the calls"
            ),
        }
    }
}
