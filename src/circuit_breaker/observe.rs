//! What a breaker reports: call outcomes, rejections, transitions and its
//! state, as metrics and as tracing events with the uniform fields.

use std::sync::Arc;
#[cfg(feature = "metrics")]
use std::sync::{Mutex, PoisonError};

#[cfg(feature = "metrics")]
use crate::observability::{
    CIRCUIT_BREAKER_CALLS, CIRCUIT_BREAKER_STATE, CIRCUIT_BREAKER_TRANSITIONS, record,
};

use super::state::{Outcome, State};

/// The `outcome` of a call, as a label value and an index into
/// [`Observer`]'s keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Success,
    Failure,
    SlowSuccess,
    SlowFailure,
    Ignored,
    Rejected,
    /// Let through unclassified while the breaker is disabled.
    Disabled,
}

impl CallOutcome {
    #[cfg(feature = "metrics")]
    const ALL: [CallOutcome; 7] = [
        CallOutcome::Success,
        CallOutcome::Failure,
        CallOutcome::SlowSuccess,
        CallOutcome::SlowFailure,
        CallOutcome::Ignored,
        CallOutcome::Rejected,
        CallOutcome::Disabled,
    ];

    /// How the breaker classified a finished call.
    #[inline]
    pub(crate) fn of(outcome: Outcome, slow: bool) -> Self {
        match (outcome, slow) {
            (Outcome::Success, false) => CallOutcome::Success,
            (Outcome::Failure, false) => CallOutcome::Failure,
            (Outcome::Success, true) => CallOutcome::SlowSuccess,
            (Outcome::Failure, true) => CallOutcome::SlowFailure,
            (Outcome::Ignored, _) => CallOutcome::Ignored,
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Failure => "failure",
            CallOutcome::SlowSuccess => "slow_success",
            CallOutcome::SlowFailure => "slow_failure",
            CallOutcome::Ignored => "ignored",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Disabled => "disabled",
        }
    }
}

/// Every state, in the order of [`State::code`].
#[cfg(feature = "metrics")]
const STATES: [State; 6] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::ForcedOpen,
    State::ForcedClosed,
    State::Disabled,
];

/// The name and metric keys shared by the breakers of one layer: one
/// breaker, or every key's breaker of a keyed layer, which share the `name`
/// label (a per-key label would grow without bound).
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    calls: [metrics::Key; 7],
    #[cfg(feature = "metrics")]
    states: [metrics::Key; 6],
    // Breakers in each state: 0 or 1 for a single breaker, a count of keys
    // for a keyed one. Kept here, not read back from the recorder, so the
    // gauge is set to absolute values.
    #[cfg(feature = "metrics")]
    in_state: Mutex<[u32; 6]>,
}

impl Observer {
    pub(crate) fn new(name: Option<Arc<str>>) -> Arc<Self> {
        let name = name.unwrap_or_else(|| Arc::from(crate::observability::DEFAULT_NAME));
        let observer = Self {
            #[cfg(feature = "metrics")]
            calls: CallOutcome::ALL.map(|outcome| {
                record::key(
                    CIRCUIT_BREAKER_CALLS,
                    &name,
                    &[("outcome", outcome.as_str())],
                )
            }),
            #[cfg(feature = "metrics")]
            states: STATES
                .map(|state| record::key(CIRCUIT_BREAKER_STATE, &name, &[("state", label(state))])),
            #[cfg(feature = "metrics")]
            in_state: Mutex::new([0; 6]),
            name,
        };
        Arc::new(observer)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Counts one call under `outcome`.
    #[inline]
    pub(crate) fn count(&self, outcome: CallOutcome) {
        #[cfg(feature = "metrics")]
        record::increment(&self.calls[outcome as usize]);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    /// A breaker moved from `from` to `to`; `gauged` is whether it counts
    /// in the state gauge (see `Breaker::publish_state`).
    pub(crate) fn transition(&self, from: State, to: State, gauged: bool) {
        #[cfg(feature = "metrics")]
        {
            let key = record::key(
                CIRCUIT_BREAKER_TRANSITIONS,
                &self.name,
                &[("from", label(from)), ("to", label(to))],
            );
            record::increment(&key);
            if gauged {
                self.update_states(|in_state| {
                    in_state[from.code() as usize] =
                        in_state[from.code() as usize].saturating_sub(1);
                    in_state[to.code() as usize] += 1;
                });
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (from, to, gauged);
    }

    /// A breaker in `state` starts counting in the gauge.
    pub(crate) fn enter(&self, state: State) {
        #[cfg(feature = "metrics")]
        self.update_states(|in_state| in_state[state.code() as usize] += 1);
        #[cfg(not(feature = "metrics"))]
        let _ = state;
    }

    /// A breaker in `state` stops counting in the gauge: a keyed layer
    /// forgot it.
    pub(crate) fn leave(&self, state: State) {
        #[cfg(feature = "metrics")]
        self.update_states(|in_state| {
            in_state[state.code() as usize] = in_state[state.code() as usize].saturating_sub(1);
        });
        #[cfg(not(feature = "metrics"))]
        let _ = state;
    }

    /// Sets every state's gauge (not only the two that changed), so a
    /// recorder installed late catches up at the next change.
    #[cfg(feature = "metrics")]
    fn update_states(&self, change: impl FnOnce(&mut [u32; 6])) {
        let mut in_state = self.in_state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut in_state);
        for (key, &n) in self.states.iter().zip(in_state.iter()) {
            record::set_gauge(key, f64::from(n));
        }
    }
}

/// A state as a label value: Prometheus style, with underscores.
#[cfg(feature = "metrics")]
fn label(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::ForcedClosed => "forced_closed",
        State::Disabled => "disabled",
    }
}
