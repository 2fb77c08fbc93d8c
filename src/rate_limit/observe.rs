//! What rate limiting reports: one tracing event and one counter per
//! decision, with the names of [`crate::observability`].

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Level;

use super::store::{Decision, Limits, StoreError};
use crate::observability::{self, DEFAULT_NAME, redact_key};
#[cfg(feature = "metrics")]
use crate::observability::{
    RATE_LIMIT_DECISIONS, RATE_LIMIT_LOCAL_DENIALS, RATE_LIMIT_OVERFLOW, record,
};

/// What the layer decided: the `outcome` label and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    ShadowDenied,
    MissingCallerKey,
    FailedOpen,
    FailedClosed,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 6] = [
        Self::Allowed,
        Self::Denied,
        Self::ShadowDenied,
        Self::MissingCallerKey,
        Self::FailedOpen,
        Self::FailedClosed,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::ShadowDenied => "shadow_denied",
            Self::MissingCallerKey => "missing_caller_key",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
        }
    }
}

/// A rate limit layer's name and metric keys, built once per layer and
/// shared by its services (see `observability::record` for why keys and
/// not handles).
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    decisions: [metrics::Key; 6],
    #[cfg(feature = "metrics")]
    local_denials: metrics::Key,
    #[cfg(feature = "metrics")]
    overflow: metrics::Key,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            decisions: Outcome::ALL.map(|outcome| {
                record::key(
                    RATE_LIMIT_DECISIONS,
                    &name,
                    &[("outcome", outcome.as_str())],
                )
            }),
            #[cfg(feature = "metrics")]
            local_denials: record::key(RATE_LIMIT_LOCAL_DENIALS, &name, &[]),
            #[cfg(feature = "metrics")]
            overflow: record::key(RATE_LIMIT_OVERFLOW, &name, &[]),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The start of a store decision, read only when a decision event can
    /// be logged: on the memory store a clock read would cost about as
    /// much as the decision itself.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        tracing::enabled!(Level::DEBUG).then(Instant::now)
    }

    #[inline]
    fn count(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        record::increment(&self.decisions[outcome as usize]);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    /// The request had no key and the layer rejects such requests.
    pub(crate) fn missing_key(&self) {
        let outcome = Outcome::MissingCallerKey;
        self.count(outcome);
        tracing::debug!(
            layer = "rate_limit",
            name = &*self.name,
            outcome = outcome.as_str(),
            "rate limit key missing: rejected"
        );
    }

    /// The request costs more than any quota can ever allow: denied
    /// without asking the store.
    pub(crate) fn too_costly(&self, key: &str, cost: u32, max: u32) {
        let outcome = Outcome::Denied;
        self.count(outcome);
        tracing::debug!(
            layer = "rate_limit",
            name = &*self.name,
            key = %redact_key(key),
            outcome = outcome.as_str(),
            cost,
            max,
            "rate limit cost too high"
        );
    }

    /// The store decided; `shadow` turns a denial into `shadow_denied`.
    #[inline]
    pub(crate) fn decided(
        &self,
        key: &str,
        decision: &Decision,
        limits: &Limits,
        shadow: bool,
        start: Option<Instant>,
    ) {
        #[cfg(feature = "metrics")]
        if decision.is_overflowed() {
            record::increment(&self.overflow);
        }
        if decision.is_allowed() {
            self.count(Outcome::Allowed);
            tracing::trace!(
                layer = "rate_limit",
                name = &*self.name,
                key = %redact_key(key),
                outcome = Outcome::Allowed.as_str(),
                latency_us = latency_us(start),
                "rate limit allowed"
            );
            return;
        }
        let outcome = if shadow {
            Outcome::ShadowDenied
        } else {
            Outcome::Denied
        };
        self.count(outcome);
        #[cfg(feature = "metrics")]
        if decision.is_cached() {
            record::increment(&self.local_denials);
        }
        tracing::debug!(
            layer = "rate_limit",
            name = &*self.name,
            key = %redact_key(key),
            outcome = outcome.as_str(),
            latency_us = latency_us(start),
            policy = limits.name(decision.quota()),
            retry_after_ms = u64::try_from(decision.retry_after().as_millis()).unwrap_or(u64::MAX),
            cached = decision.is_cached(),
            overflowed = decision.is_overflowed(),
            "rate limited"
        );
    }

    /// The store failed; `closed` says whether the request is refused.
    pub(crate) fn failed(
        &self,
        key: &str,
        error: &StoreError,
        closed: bool,
        start: Option<Instant>,
    ) {
        if closed {
            self.count(Outcome::FailedClosed);
            tracing::warn!(
                layer = "rate_limit",
                name = &*self.name,
                key = %redact_key(key),
                outcome = Outcome::FailedClosed.as_str(),
                latency_us = latency_us(start),
                error = %crate::observability::ErrorChain(error),
                "rate limit store failed: failing closed"
            );
        } else {
            self.count(Outcome::FailedOpen);
            tracing::warn!(
                layer = "rate_limit",
                name = &*self.name,
                key = %redact_key(key),
                outcome = Outcome::FailedOpen.as_str(),
                latency_us = latency_us(start),
                error = %crate::observability::ErrorChain(error),
                "rate limit store failed: failing open"
            );
        }
    }
}

fn latency_us(start: Option<Instant>) -> Option<u64> {
    start.map(|start| observability::latency_us(start.elapsed()))
}
