//! Additive increase, multiplicative decrease.

use std::time::Duration;

use super::algorithm::{
    Algorithm, DEFAULT_INITIAL_LIMIT, DEFAULT_MAX_LIMIT, DEFAULT_MIN_LIMIT, Sample, check_bounds,
    check_range,
};
use crate::load_shed::ConfigError;

/// [`Aimd::backoff`]'s default: 0.9, as in Netflix's `AIMDLimit`.
pub const DEFAULT_BACKOFF: f64 = 0.9;
/// [`Aimd::latency_threshold`]'s default: 5 s, as Netflix's `AIMDLimit`
/// timeout (so by default only drops back off).
pub const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_secs(5);

/// Additive increase, multiplicative decrease, as TCP's congestion
/// avoidance and Netflix's `AIMDLimit`.
///
/// - **Increase**: a request that succeeds within the
///   [latency threshold](Self::latency_threshold) while the limit is being
///   used (at least half of it in flight when it was admitted, as Netflix's)
///   adds `1 / limit`: one more permit per round trip's worth of requests.
///   (Netflix adds 1 per request, which doubles the limit every round trip
///   and overshoots far before the first slow answer comes back.)
/// - **Decrease**: a dropped request (the inner service failed) or one
///   slower than the threshold multiplies the limit by the
///   [backoff](Self::backoff). At most once per round trip: the requests
///   admitted before the last backoff were admitted under the old limit, so
///   their slowness is no news.
/// - The limit stays within [bounds](Self::bounds) (default
///   [`DEFAULT_MIN_LIMIT`](super::DEFAULT_MIN_LIMIT) to
///   [`DEFAULT_MAX_LIMIT`](super::DEFAULT_MAX_LIMIT), starting at
///   [`DEFAULT_INITIAL_LIMIT`](super::DEFAULT_INITIAL_LIMIT)).
///
/// Pick it when a latency above which the service is overloaded is known
/// (an SLO), or when overload shows as errors (timeouts, `503`s) rather
/// than as latency.
///
/// ```
/// use std::time::Duration;
/// use palisade::adaptive_concurrency::Aimd;
///
/// let aimd = Aimd::new()
///     .bounds(4, 16, 256)?
///     .backoff(0.8)?
///     .latency_threshold(Duration::from_millis(250));
/// assert!(Aimd::new().backoff(1.5).is_err());
/// # let _ = aimd;
/// # Ok::<(), palisade::load_shed::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    initial: u32,
    min: u32,
    max: u32,
    backoff: f64,
    threshold: Duration,
    last_backoff: Option<Duration>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// AIMD with the defaults above.
    pub fn new() -> Self {
        Self {
            limit: f64::from(DEFAULT_INITIAL_LIMIT),
            initial: DEFAULT_INITIAL_LIMIT,
            min: DEFAULT_MIN_LIMIT,
            max: DEFAULT_MAX_LIMIT,
            backoff: DEFAULT_BACKOFF,
            threshold: DEFAULT_LATENCY_THRESHOLD,
            last_backoff: None,
        }
    }

    /// The lowest, starting and highest limit.
    ///
    /// # Errors
    ///
    /// [`ConfigError::LimitBounds`] unless `1 <= min <= initial <= max`.
    pub fn bounds(mut self, min: u32, initial: u32, max: u32) -> Result<Self, ConfigError> {
        check_bounds(min, initial, max)?;
        self.min = min;
        self.initial = initial;
        self.max = max;
        self.limit = f64::from(initial);
        Ok(self)
    }

    /// What a backoff multiplies the limit by (default
    /// [`DEFAULT_BACKOFF`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] unless `0.5 <= ratio < 1`: below one
    /// half a single slow request throws away most of the limit, at one
    /// nothing ever backs off.
    pub fn backoff(mut self, ratio: f64) -> Result<Self, ConfigError> {
        self.backoff = check_range("backoff", "[0.5, 1)", ratio, |r| (0.5..1.0).contains(&r))?;
        Ok(self)
    }

    /// A request slower than this (from its admission to its response)
    /// counts as a sign of overload (default
    /// [`DEFAULT_LATENCY_THRESHOLD`]).
    #[must_use]
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }
}

impl Algorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.initial
    }

    fn update(&mut self, sample: Sample, now: Duration) -> u32 {
        if sample.dropped || sample.latency > self.threshold {
            let admitted = now.saturating_sub(sample.latency);
            if self.last_backoff.is_none_or(|at| admitted >= at) {
                self.limit = (self.limit * self.backoff).max(f64::from(self.min));
                self.last_backoff = Some(now);
            }
        } else if f64::from(sample.in_flight) * 2.0 >= self.limit {
            self.limit = (self.limit + 1.0 / self.limit).min(f64::from(self.max));
        }
        // Within [min, max] by construction, and min >= 1.
        self.limit as u32
    }
}
