//! What the idempotency layer reports: one counter per request it decides,
//! and tracing events with the fields of [`crate::observability`].

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::Level;

use super::error::StoreError;
use super::key::{IdempotencyKey, InvalidKey};
use crate::observability::{self, DEFAULT_NAME, redact_key};
#[cfg(feature = "metrics")]
use crate::observability::{IDEMPOTENCY_REQUESTS, record};

/// How a request the layer applies to ended: the `outcome` label and field.
/// Every such request is counted exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ran, and its response is stored for replay.
    Executed,
    /// Got the stored response of an earlier run.
    Replayed,
    /// Found its key in flight (409).
    Conflict,
    /// Reused a key with another request (422).
    Mismatch,
    /// Carried no key where one is required, or an invalid one (400).
    InvalidKey,
    /// Had no caller key to keep its key per (400).
    MissingCallerKey,
    /// Had a body over the limit (413) or one that could not be read (400).
    BodyRejected,
    /// Retried a request that ran but whose response was not kept (410).
    Gone,
    /// Ran (or was dropped while running), but its response is not kept:
    /// a status not stored, an error, a panic, a response too large, a lost
    /// lease or a store failure on completion.
    NotStored,
    /// The store failed and the request ran without idempotency.
    FailedOpen,
    /// The store failed and the request was refused (503).
    FailedClosed,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 11] = [
        Self::Executed,
        Self::Replayed,
        Self::Conflict,
        Self::Mismatch,
        Self::InvalidKey,
        Self::MissingCallerKey,
        Self::BodyRejected,
        Self::Gone,
        Self::NotStored,
        Self::FailedOpen,
        Self::FailedClosed,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::Replayed => "replayed",
            Self::Conflict => "conflict",
            Self::Mismatch => "mismatch",
            Self::InvalidKey => "invalid_key",
            Self::MissingCallerKey => "missing_caller_key",
            Self::BodyRejected => "body_rejected",
            Self::Gone => "gone",
            Self::NotStored => "not_stored",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
        }
    }
}

/// An idempotency layer's name and metric keys, built once per layer and
/// shared by its services (see `observability::record` for why keys and
/// not handles).
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    requests: [metrics::Key; 11],
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            requests: Outcome::ALL.map(|outcome| {
                record::key(
                    IDEMPOTENCY_REQUESTS,
                    &name,
                    &[("outcome", outcome.as_str())],
                )
            }),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The start of a store operation, read only when its event can be
    /// logged.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        tracing::enabled!(Level::DEBUG).then(Instant::now)
    }

    #[inline]
    pub(crate) fn count(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        record::increment(&self.requests[outcome as usize]);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    /// The required key is missing (`None`), or the key is invalid. The
    /// event carries no key: there is none, or it is not one.
    pub(crate) fn invalid_key(&self, invalid: Option<&InvalidKey>) {
        self.count(Outcome::InvalidKey);
        let reason: &dyn fmt::Display = match invalid {
            Some(invalid) => invalid,
            None => &"the idempotency key is missing",
        };
        tracing::debug!(
            layer = "idempotency",
            name = &*self.name,
            outcome = Outcome::InvalidKey.as_str(),
            %reason,
            "invalid idempotency key"
        );
    }

    /// The request was refused before its key was claimed (`MissingCallerKey`
    /// or `BodyRejected`).
    pub(crate) fn refused(&self, key: &IdempotencyKey, outcome: Outcome, reason: &'static str) {
        self.count(outcome);
        tracing::debug!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            outcome = outcome.as_str(),
            reason,
            "idempotent request refused"
        );
    }

    /// The claim found a record and answered from it: `Replayed`,
    /// `Conflict`, `Mismatch` or `Gone`, with the HTTP status it gives.
    pub(crate) fn answered(
        &self,
        key: &IdempotencyKey,
        outcome: Outcome,
        status: u16,
        start: Option<Instant>,
    ) {
        self.count(outcome);
        macro_rules! event {
            ($message:literal) => {
                tracing::debug!(
                    layer = "idempotency",
                    name = &*self.name,
                    key = %redact_key(key.as_str()),
                    outcome = outcome.as_str(),
                    latency_us = latency_us(start),
                    status,
                    $message
                )
            };
        }
        match outcome {
            Outcome::Replayed => event!("idempotent response replayed"),
            Outcome::Conflict => event!("idempotency key in flight"),
            Outcome::Mismatch => event!("idempotency key reused with a different request"),
            _ => event!("idempotent request ran but its response was not retained"),
        }
    }

    /// The store failed on the claim.
    pub(crate) fn claim_failed(
        &self,
        key: &IdempotencyKey,
        error: &StoreError,
        open: bool,
        start: Option<Instant>,
    ) {
        let outcome = if open {
            Outcome::FailedOpen
        } else {
            Outcome::FailedClosed
        };
        self.count(outcome);
        if open {
            tracing::warn!(
                layer = "idempotency",
                name = &*self.name,
                key = %redact_key(key.as_str()),
                outcome = outcome.as_str(),
                latency_us = latency_us(start),
                error = %crate::observability::ErrorChain(error),
                "idempotency store error, running without idempotency"
            );
        } else {
            tracing::warn!(
                layer = "idempotency",
                name = &*self.name,
                key = %redact_key(key.as_str()),
                outcome = outcome.as_str(),
                latency_us = latency_us(start),
                error = %crate::observability::ErrorChain(error),
                "idempotency store error, refusing the request"
            );
        }
    }

    /// The key was claimed: the request runs next. Not an outcome yet.
    pub(crate) fn claimed(&self, key: &IdempotencyKey, fence: u64, start: Option<Instant>) {
        tracing::trace!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            latency_us = latency_us(start),
            fence,
            "idempotency key claimed"
        );
    }

    /// The claimed request's response was written to the store:
    /// `executed` when it is kept for replay, `not_stored` when it was too
    /// large and only its completion is kept.
    pub(crate) fn completed(
        &self,
        key: &IdempotencyKey,
        fence: u64,
        retained: bool,
        start: Option<Instant>,
    ) {
        if retained {
            self.count(Outcome::Executed);
            tracing::trace!(
                layer = "idempotency",
                name = &*self.name,
                key = %redact_key(key.as_str()),
                outcome = Outcome::Executed.as_str(),
                latency_us = latency_us(start),
                fence,
                retained,
                "idempotent response stored"
            );
        } else {
            self.count(Outcome::NotStored);
            tracing::debug!(
                layer = "idempotency",
                name = &*self.name,
                key = %redact_key(key.as_str()),
                outcome = Outcome::NotStored.as_str(),
                latency_us = latency_us(start),
                fence,
                retained,
                "idempotent response stored"
            );
        }
    }

    /// The claimed request's response could not be written: its lease had
    /// expired and the key was released or claimed again.
    pub(crate) fn lease_lost(&self, key: &IdempotencyKey, fence: u64, start: Option<Instant>) {
        self.count(Outcome::NotStored);
        tracing::warn!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            outcome = Outcome::NotStored.as_str(),
            latency_us = latency_us(start),
            fence,
            "idempotent response not stored: the lease expired and the key was released or claimed again"
        );
    }

    /// The claimed request's key was released, `why`: it ran but nothing is
    /// kept, so a retry runs again.
    pub(crate) fn released(
        &self,
        key: impl fmt::Display,
        fence: u64,
        released: bool,
        why: &'static str,
        start: Option<Instant>,
    ) {
        self.count(Outcome::NotStored);
        tracing::debug!(
            layer = "idempotency",
            name = &*self.name,
            key = %key,
            outcome = Outcome::NotStored.as_str(),
            latency_us = latency_us(start),
            fence,
            released,
            why,
            "idempotency key released"
        );
    }

    /// The request future was dropped while its key is held: the key stays
    /// claimed until its lease expires.
    pub(crate) fn held(&self, key: &IdempotencyKey, fence: u64) {
        self.count(Outcome::NotStored);
        tracing::debug!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            outcome = Outcome::NotStored.as_str(),
            fence,
            "request dropped, idempotency key held until its lease expires"
        );
    }

    /// A renewal found the lease gone (it expired while the holder stalled,
    /// and the key was freed or claimed again): the run goes on, its
    /// completion will write nothing, and it is counted then (`not_stored`).
    pub(crate) fn renewal_lost(&self, key: &IdempotencyKey, fence: u64) {
        tracing::warn!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            fence,
            "idempotency lease lost while the request runs: another run may start; this one's response will not be stored"
        );
    }

    /// A renewal failed (the store is unreachable): the next one tries
    /// again; the lease runs out if none gets through.
    pub(crate) fn renewal_failed(&self, key: &IdempotencyKey, fence: u64, error: &StoreError) {
        tracing::warn!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            fence,
            error = %crate::observability::ErrorChain(error),
            "idempotency lease renewal failed"
        );
    }

    /// A claim whose answer never came (a store failure, or the request was
    /// dropped first) was released by its token: `released` says whether it
    /// had landed. Nothing ran under it; it counts nothing.
    pub(crate) fn claim_undone(&self, key: impl fmt::Display, released: Result<bool, StoreError>) {
        match released {
            Ok(released) => tracing::debug!(
                layer = "idempotency",
                name = &*self.name,
                key = %key,
                released,
                "unanswered idempotency claim released"
            ),
            Err(error) => tracing::warn!(
                layer = "idempotency",
                name = &*self.name,
                key = %key,
                error = %crate::observability::ErrorChain(&error),
                "unanswered idempotency claim not released; it frees itself when its lease expires"
            ),
        }
    }

    /// The store failed to complete or release a claim (`op`).
    pub(crate) fn finish_failed(
        &self,
        key: impl fmt::Display,
        fence: u64,
        op: &'static str,
        error: &StoreError,
        start: Option<Instant>,
    ) {
        self.count(Outcome::NotStored);
        tracing::warn!(
            layer = "idempotency",
            name = &*self.name,
            key = %key,
            outcome = Outcome::NotStored.as_str(),
            latency_us = latency_us(start),
            fence,
            op,
            error = %crate::observability::ErrorChain(error),
            "idempotency store error; the claim frees itself when its lease expires"
        );
    }

    /// The handler panicked under a claimed key.
    pub(crate) fn panicked(&self, key: &IdempotencyKey, fence: u64) {
        tracing::error!(
            layer = "idempotency",
            name = &*self.name,
            key = %redact_key(key.as_str()),
            fence,
            "handler panicked under an idempotency key"
        );
    }
}

fn latency_us(start: Option<Instant>) -> Option<u64> {
    start.map(|start| observability::latency_us(start.elapsed()))
}
