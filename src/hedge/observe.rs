//! What a hedge layer reports: one counter and one tracing event per request
//! and per hedge decision, with the names of [`crate::observability`].

use std::sync::Arc;
use std::time::Duration;

use crate::observability::{DEFAULT_NAME, latency_us};
#[cfg(feature = "metrics")]
use crate::observability::{HEDGE_CALLS, HEDGE_DELAY, HEDGE_HEDGES, record};

/// Which attempt answered a request, the `outcome` of
/// `palisade_hedge_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    Primary,
    Hedge,
    NotReplayable,
}

impl Answered {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 3] = [Self::Primary, Self::Hedge, Self::NotReplayable];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Hedge => "hedge",
            Self::NotReplayable => "not_replayable",
        }
    }
}

/// A hedge layer's name and metric keys, built once per layer.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    calls: [metrics::Key; 3],
    #[cfg(feature = "metrics")]
    sent: metrics::Key,
    #[cfg(feature = "metrics")]
    exhausted: metrics::Key,
    #[cfg(feature = "metrics")]
    delay: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            calls: Answered::ALL
                .map(|a| record::key(HEDGE_CALLS, &name, &[("outcome", a.as_str())])),
            #[cfg(feature = "metrics")]
            sent: record::key(HEDGE_HEDGES, &name, &[("outcome", "sent")]),
            #[cfg(feature = "metrics")]
            exhausted: record::key(HEDGE_HEDGES, &name, &[("outcome", "budget_exhausted")]),
            #[cfg(feature = "metrics")]
            delay: record::key(HEDGE_DELAY, &name, &[]),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A request answered by attempt `attempt` (0 for the first), `latency`
    /// after the call.
    #[inline]
    pub(crate) fn answered(&self, answered: Answered, attempt: u32, latency: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.calls[answered as usize]);
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.answered_event(answered, attempt, latency);
        }
    }

    #[cold]
    #[inline(never)]
    fn answered_event(&self, answered: Answered, attempt: u32, latency: Duration) {
        tracing::trace!(
            layer = "hedge",
            name = &*self.name,
            outcome = answered.as_str(),
            attempt,
            latency_us = latency_us(latency),
            "hedged request answered"
        );
    }

    /// Hedge `attempt` was sent, `elapsed` after the call.
    #[cold]
    pub(crate) fn sent(&self, attempt: u32, elapsed: Duration, delay: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.sent);
        tracing::debug!(
            layer = "hedge",
            name = &*self.name,
            outcome = "sent",
            attempt,
            latency_us = latency_us(elapsed),
            delay_us = latency_us(delay),
            "hedge sent"
        );
    }

    /// Hedge `attempt` was refused by the budget, `elapsed` after the call.
    #[cold]
    pub(crate) fn exhausted(&self, attempt: u32, elapsed: Duration) {
        #[cfg(feature = "metrics")]
        record::increment(&self.exhausted);
        tracing::debug!(
            layer = "hedge",
            name = &*self.name,
            outcome = "budget_exhausted",
            attempt,
            latency_us = latency_us(elapsed),
            "hedge refused: retry budget exhausted"
        );
    }

    /// The delay was computed again.
    #[inline]
    pub(crate) fn delay(&self, delay: Option<Duration>) {
        #[cfg(feature = "metrics")]
        record::set_gauge(&self.delay, delay.map_or(0.0, |d| d.as_secs_f64()));
        #[cfg(not(feature = "metrics"))]
        let _ = delay;
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::Answered;

    #[test]
    fn each_outcome_finds_its_own_metric_key() {
        for (i, answered) in Answered::ALL.into_iter().enumerate() {
            assert_eq!(answered as usize, i, "{answered:?}");
        }
    }
}
