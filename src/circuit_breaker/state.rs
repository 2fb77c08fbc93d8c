//! The breaker's states, transitions and metrics, as the [`Handle`](super::Handle) reports them.

use std::fmt;
use std::time::Duration;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; their outcomes are counted.
    Closed,
    /// Calls fail fast with [`Error::Open`](super::Error::Open) until the
    /// open wait is over.
    Open,
    /// A few probe calls pass; the rest fail fast.
    HalfOpen,
    /// Held open through the handle: every call fails fast.
    ForcedOpen,
    /// Held closed through the handle: calls pass and are counted, but the
    /// breaker never trips.
    ForcedClosed,
    /// Switched off through the handle: calls pass and nothing is counted.
    Disabled,
}

impl State {
    pub(crate) const fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::ForcedClosed => 4,
            State::Disabled => 5,
        }
    }

    pub(crate) const fn from_code(code: u8) -> Self {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::ForcedClosed,
            _ => State::Disabled,
        }
    }

    /// Lowercase name, as in tracing events.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced-open",
            State::ForcedClosed => "forced-closed",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The consecutive-failure threshold was reached.
    ConsecutiveFailures,
    /// The failure share of the window reached the threshold.
    FailureRate,
    /// The slow-call share of the window reached the threshold.
    SlowCallRate,
    /// The open wait was over and a call arrived.
    WaitElapsed,
    /// A probe failed (or was slow) while half-open.
    ProbeFailed,
    /// Every probe succeeded while half-open.
    ProbesSucceeded,
    /// The handle forced the state (or disabled the breaker).
    Forced,
    /// The handle reset the breaker.
    Reset,
    /// Another instance of a breaker shared across instances changed the
    /// fleet's state (see the [module docs](super#shared-across-instances)).
    Fleet,
}

impl Reason {
    /// Lowercase name, as in tracing events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive failures",
            Reason::FailureRate => "failure rate",
            Reason::SlowCallRate => "slow-call rate",
            Reason::WaitElapsed => "open wait elapsed",
            Reason::ProbeFailed => "probe failed",
            Reason::ProbesSucceeded => "probes succeeded",
            Reason::Forced => "forced",
            Reason::Reset => "reset",
            Reason::Fleet => "another instance",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, as sent to [`Handle::subscribe`](super::Handle::subscribe).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// The window's failure share when it happened (window modes, with at
    /// least one call in the window).
    pub failure_rate: Option<f64>,
    /// The window's slow-call share when it happened.
    pub slow_call_rate: Option<f64>,
    /// How long the breaker stays open, when `to` is [`State::Open`].
    pub open_for: Option<Duration>,
}

/// A snapshot of a breaker, from [`Handle::metrics`](super::Handle::metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Calls in the window (window modes; 0 in consecutive mode).
    pub calls_in_window: u32,
    /// Failures in the window.
    pub failures_in_window: u32,
    /// Slow calls in the window.
    pub slow_calls_in_window: u32,
    /// Failure share of the window, if it holds any call.
    pub failure_rate: Option<f64>,
    /// Slow-call share of the window, if it holds any call.
    pub slow_call_rate: Option<f64>,
    /// Failures in a row (consecutive mode; 0 in window modes).
    pub consecutive_failures: u32,
    /// Trips in a row without closing in between (drives the backoff).
    pub trips: u32,
}

/// What a finished call means to the breaker; see [`Classify`](super::Classify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed: counts towards tripping.
    Failure,
    /// Neither (a client error, a cancelled request): not counted at all.
    Ignored,
}
