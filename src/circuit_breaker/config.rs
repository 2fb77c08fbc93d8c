//! Breaker settings: when to trip, how long to stay open, how to probe.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A share between 0 (exclusive) and 1 (inclusive), such as a failure-rate
/// threshold.
///
/// ```
/// use palisade::circuit_breaker::Rate;
///
/// assert_eq!(Rate::new(0.5).unwrap().get(), 0.5);
/// assert!(Rate::new(0.0).is_err());
/// assert!(Rate::new(1.5).is_err());
/// assert!(Rate::new(f64::NAN).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(f64);

impl Rate {
    /// One half: the default failure-rate and slow-call-rate threshold.
    pub const HALF: Rate = Rate(0.5);
    /// All calls.
    pub const ALL: Rate = Rate(1.0);

    /// A share in `(0, 1]`; anything else (including NaN) is an error.
    pub fn new(share: f64) -> Result<Self, InvalidRate> {
        if share > 0.0 && share <= 1.0 {
            Ok(Self(share))
        } else {
            Err(InvalidRate(share))
        }
    }

    /// A share given in percent, in `1..=100`.
    pub fn percent(percent: u8) -> Result<Self, InvalidRate> {
        Self::new(f64::from(percent) / 100.0)
    }

    /// The share, in `(0, 1]`.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// The error of [`Rate::new`]: the value is not in `(0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("a rate must be in (0, 1], got {0}")]
pub struct InvalidRate(pub f64);

/// Why [`Handle::set_config`](super::Handle::set_config) refused a config;
/// the settings in force stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// The config names another breaker: the name labels the breaker's
    /// metrics series (and, shared, its Redis keys), so it cannot change
    /// while the breaker runs.
    #[error("circuit breaker {name:?} cannot be renamed {given:?} at run time")]
    Renamed {
        /// The breaker's name.
        name: String,
        /// The name in the refused config.
        given: String,
    },
}

/// What trips the breaker while it is closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// This many failures in a row.
    Consecutive(u32),
    /// Failure (or slow-call) share of exactly the last `size` calls.
    Count { size: u32 },
    /// Failure (or slow-call) share of the calls of the last `length`,
    /// kept in `buckets` buckets.
    Time { length: Duration, buckets: u32 },
}

/// The largest consecutive-failure threshold: the count shares a word with
/// the state.
pub(crate) const MAX_CONSECUTIVE: u32 = (1 << 24) - 1;

/// The default of [`Config::consecutive_failures`]: 5 failures in a row.
pub const DEFAULT_CONSECUTIVE_FAILURES: NonZeroU32 = NonZeroU32::new(5).unwrap();
/// The default of [`Config::failure_rate`]: one half.
pub const DEFAULT_FAILURE_RATE: Rate = Rate::HALF;
/// The default of [`Config::minimum_calls`]: 10 calls.
pub const DEFAULT_MINIMUM_CALLS: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// The default of [`Config::open_wait`]: 30 s.
pub const DEFAULT_OPEN_WAIT: Duration = Duration::from_secs(30);
/// The default of [`Config::half_open_probes`]: 1 probe.
pub const DEFAULT_HALF_OPEN_PROBES: NonZeroU32 = NonZeroU32::new(1).unwrap();
/// The default of [`Config::probe_timeout`]: 60 s.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a circuit breaker, given to
/// [`CircuitBreakerLayer::new`](super::CircuitBreakerLayer::new) or
/// [`KeyedCircuitBreakerLayer::new`](super::KeyedCircuitBreakerLayer::new),
/// which create the breaker's state from it once; a
/// [`Handle::set_config`](super::Handle::set_config) replaces them while
/// it runs (see the [module docs](super#reconfigure-at-run-time)).
///
/// Defaults: open after 5 consecutive failures, stay open 30 s, then let 1
/// probe through, which must finish within 60 s.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Rate};
///
/// let layer = CircuitBreakerLayer::new(
///     Config::new()
///         .count_window(NonZeroU32::new(100).unwrap())
///         .failure_rate(Rate::HALF)
///         .open_wait(Duration::from_secs(10))
///         .name("billing"),
/// );
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) mode: Mode,
    pub(crate) failure_rate: Rate,
    pub(crate) minimum_calls: NonZeroU32,
    pub(crate) slow_call: Option<(Duration, Rate)>,
    pub(crate) open_wait: Duration,
    pub(crate) backoff: Option<(f64, Duration)>,
    pub(crate) probes: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) name: Option<Arc<str>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("mode", &self.mode)
            .field("failure_rate", &self.failure_rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("slow_call", &self.slow_call)
            .field("open_wait", &self.open_wait)
            .field("backoff", &self.backoff)
            .field("probes", &self.probes)
            .field("probe_timeout", &self.probe_timeout)
            .field("name", &self.name)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Consecutive(DEFAULT_CONSECUTIVE_FAILURES.get()),
            failure_rate: DEFAULT_FAILURE_RATE,
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            slow_call: None,
            open_wait: DEFAULT_OPEN_WAIT,
            backoff: None,
            probes: DEFAULT_HALF_OPEN_PROBES.get(),
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            name: None,
        }
    }
}

impl Config {
    /// The defaults (see the type docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trips after `n` failures in a row (the default mode, `n` = 5). A
    /// success resets the count; ignored calls leave it alone. A slow call
    /// (see [`slow_calls`](Self::slow_calls)) counts as a failure here.
    ///
    /// `n` is capped at 16,777,215.
    #[must_use]
    pub fn consecutive_failures(mut self, n: NonZeroU32) -> Self {
        self.mode = Mode::Consecutive(n.get().min(MAX_CONSECUTIVE));
        self
    }

    /// Trips on the failure rate of exactly the last `size` calls (a ring),
    /// once at least [`minimum_calls`](Self::minimum_calls) are in it.
    #[must_use]
    pub fn count_window(mut self, size: NonZeroU32) -> Self {
        self.mode = Mode::Count { size: size.get() };
        self
    }

    /// Trips on the failure rate of the calls that finished in the last
    /// `length`, kept in `buckets` buckets of `length / buckets` each: the
    /// window slides one bucket at a time (it holds the current bucket and
    /// the `buckets - 1` before it, so between `length - length / buckets`
    /// and `length` of history). Reads the clock once per call, when it
    /// finishes (see the [module docs](super#cost)).
    ///
    /// A zero `length` is raised to one millisecond; `buckets` is capped at
    /// 1,000.
    #[must_use]
    pub fn time_window(mut self, length: Duration, buckets: NonZeroU32) -> Self {
        self.mode = Mode::Time {
            length: length.max(Duration::from_millis(1)),
            buckets: buckets.get().min(1000),
        };
        self
    }

    /// The failure share of the window at or above which the breaker trips
    /// (default one half). Used by the window modes.
    #[must_use]
    pub fn failure_rate(mut self, rate: Rate) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The calls the window must hold before its rates can trip the breaker
    /// (default 10; for a count window, at most its size counts).
    #[must_use]
    pub fn minimum_calls(mut self, n: NonZeroU32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// A call that takes `duration` or longer is slow; the breaker trips
    /// when the slow share of the window reaches `rate` (in consecutive mode,
    /// a slow call counts as a failure). Reads the clock twice per call, when
    /// it starts and when it finishes (see the [module docs](super#cost)).
    #[must_use]
    pub fn slow_calls(mut self, duration: Duration, rate: Rate) -> Self {
        self.slow_call = Some((duration, rate));
        self
    }

    /// How long the breaker stays open before it lets probes through
    /// (default 30 s).
    #[must_use]
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }

    /// Grows the open wait by `multiplier` on each trip that follows a failed
    /// probe, up to `max`; the wait falls back to
    /// [`open_wait`](Self::open_wait) once the breaker closes again.
    /// A `multiplier` below 1 (or NaN) is taken as 1.
    #[must_use]
    pub fn backoff(mut self, multiplier: f64, max: Duration) -> Self {
        let multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
        self.backoff = Some((multiplier, max));
        self
    }

    /// Calls let through while half-open (default 1); all of them must
    /// succeed to close the breaker, and one failure opens it again.
    #[must_use]
    pub fn half_open_probes(mut self, n: NonZeroU32) -> Self {
        self.probes = n.get();
        self
    }

    /// How long a probe may run before its permit is taken back and given
    /// to the next call (default 60 s), so a probe that never finishes
    /// cannot leave the breaker half-open for good. Its late outcome is
    /// ignored.
    #[must_use]
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// A name for the breaker's metrics (the `name` label) and tracing
    /// events (the `name` field), such as the dependency it guards; the
    /// default is [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME). A
    /// keyed breaker's keys all share it. See [`crate::observability`].
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Refuses this config for a breaker named `name` if it names another
    /// (unset is the default name).
    pub(crate) fn check_name(&self, name: &str) -> Result<(), super::InvalidConfig> {
        let given = self
            .name
            .as_deref()
            .unwrap_or(crate::observability::DEFAULT_NAME);
        if given != name {
            return Err(super::InvalidConfig::Renamed {
                name: name.to_owned(),
                given: given.to_owned(),
            });
        }
        Ok(())
    }

    /// The open wait after the `trip`-th trip in a row (1-based).
    pub(crate) fn wait_for_trip(&self, trip: u32) -> Duration {
        match self.backoff {
            None => self.open_wait,
            Some((multiplier, max)) => {
                // A cap below the base wait would shrink the wait: keep the base.
                let cap = max.max(self.open_wait);
                let exp = i32::try_from(trip.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = self.open_wait.as_secs_f64() * multiplier.powi(exp);
                if secs.is_finite() && secs < cap.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    cap
                }
            }
        }
    }

    /// Whether a call needs the clock when it starts.
    pub(crate) fn clock_at_start(&self) -> bool {
        self.slow_call.is_some()
    }

    /// Whether a call needs the clock when it ends.
    pub(crate) fn clock_at_end(&self) -> bool {
        self.slow_call.is_some() || matches!(self.mode, Mode::Time { .. })
    }
}
