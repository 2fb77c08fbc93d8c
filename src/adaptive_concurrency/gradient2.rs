//! Netflix's Gradient2: the limit follows the ratio of a long-term RTT to
//! the current one.

use std::num::NonZeroU32;
use std::time::Duration;

use super::algorithm::{
    Algorithm, DEFAULT_INITIAL_LIMIT, DEFAULT_MAX_LIMIT, DEFAULT_MIN_LIMIT, Sample, check_bounds,
    check_range,
};
use crate::load_shed::ConfigError;

/// [`Gradient2::smoothing`]'s default: 0.2, as Netflix's.
pub const DEFAULT_SMOOTHING: f64 = 0.2;
/// [`Gradient2::tolerance`]'s default: 1.5, as Netflix's.
pub const DEFAULT_TOLERANCE: f64 = 1.5;
/// [`Gradient2::long_window`]'s default: 600 windows (Netflix's is 600
/// samples, but its `WindowedLimit` feeds it one per window too).
pub const DEFAULT_LONG_WINDOW: u32 = 600;
/// [`Gradient2::warmup`]'s default: 10 windows, as Netflix's.
pub const DEFAULT_WARMUP: u32 = 10;
/// [`Gradient2::min_window`]'s default: 10 samples, as Netflix's
/// `WindowedLimit`.
pub const DEFAULT_MIN_WINDOW: u32 = 10;

/// The limit of Netflix concurrency-limits' `Gradient2Limit`: it grows while
/// requests are as fast as they usually are, and shrinks in proportion as
/// they get slower.
///
/// Samples are taken in windows of one limit's worth of requests (about
/// one round trip while the limit is used), at least
/// [`min_window`](Self::min_window), as Netflix's `WindowedLimit` does: the
/// short-term RTT is a window's mean latency. The long-term RTT is an
/// exponential average of short-term ones over
/// [`long_window`](Self::long_window) windows (a plain average over the
/// first [`warmup`](Self::warmup) windows). At the end of each window:
///
/// ```text
/// gradient = clamp(tolerance * long / short, 0.5, 1.0)
/// new      = limit * gradient + queue_size      (queue_size = sqrt(limit))
/// limit    = limit * (1 - smoothing) + new * smoothing, within [min, max]
/// ```
///
/// - While requests take up to `tolerance` times the long-term RTT, the
///   gradient is 1 and the limit grows by `sqrt(limit)` (smoothed); beyond,
///   it shrinks, by at most half a step at a time. It settles where
///   requests take `tolerance` times their unloaded latency.
/// - It does not grow while the limit is not used (fewer than half of it in
///   flight in the window): an idle service proves nothing about a higher
///   limit.
/// - The queue size is added only while the gradient is 1, as proposed in
///   Netflix/concurrency-limits#134: added under a gradient just below 1 it
///   balances the decrease and the limit stays above the capacity.
/// - The long-term RTT must not learn the queueing the limit itself let in,
///   or it drifts up with the limit and the limit climbs without end (the
///   drift of Netflix/concurrency-limits#134 and #137). So it is pulled down
///   at once to a faster window, and learns from a slower one only while the
///   limit is not used, or during the warm-up; at the minimum limit, where
///   there is nothing left to cut, a window's latency is taken as the
///   service's own. A service that really got slower thus takes the limit
///   down to its minimum, and up again from there.
/// - Drops (inner errors) are not a signal: the limit follows latency only.
///   Use [`Aimd`](super::Aimd) where overload shows as errors.
///
/// Defaults: [`DEFAULT_SMOOTHING`], [`DEFAULT_TOLERANCE`],
/// [`DEFAULT_LONG_WINDOW`], [`DEFAULT_WARMUP`], and bounds
/// [`DEFAULT_MIN_LIMIT`](super::DEFAULT_MIN_LIMIT) to
/// [`DEFAULT_MAX_LIMIT`](super::DEFAULT_MAX_LIMIT) from
/// [`DEFAULT_INITIAL_LIMIT`](super::DEFAULT_INITIAL_LIMIT).
///
/// ```
/// use palisade::adaptive_concurrency::Gradient2;
///
/// let gradient = Gradient2::new().bounds(8, 32, 512)?.tolerance(2.0)?;
/// assert!(Gradient2::new().smoothing(0.0).is_err());
/// # let _ = gradient;
/// # Ok::<(), palisade::load_shed::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    limit: f64,
    initial: u32,
    min: u32,
    max: u32,
    smoothing: f64,
    tolerance: f64,
    long_window: u32,
    warmup: u32,
    long_rtt: f64,
    windows: u32,
    min_window: u32,
    window_sum: f64,
    window_count: u32,
    window_in_flight: u32,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient2 {
    /// Gradient2 with the defaults above.
    pub fn new() -> Self {
        Self {
            limit: f64::from(DEFAULT_INITIAL_LIMIT),
            initial: DEFAULT_INITIAL_LIMIT,
            min: DEFAULT_MIN_LIMIT,
            max: DEFAULT_MAX_LIMIT,
            smoothing: DEFAULT_SMOOTHING,
            tolerance: DEFAULT_TOLERANCE,
            long_window: DEFAULT_LONG_WINDOW,
            warmup: DEFAULT_WARMUP,
            long_rtt: 0.0,
            windows: 0,
            min_window: DEFAULT_MIN_WINDOW,
            window_sum: 0.0,
            window_count: 0,
            window_in_flight: 0,
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

    /// How much of each step is taken (default [`DEFAULT_SMOOTHING`]): 1
    /// moves to the new limit at once, lower values damp noise.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] unless `0 < smoothing <= 1`.
    pub fn smoothing(mut self, smoothing: f64) -> Result<Self, ConfigError> {
        self.smoothing = check_range("smoothing", "(0, 1]", smoothing, |s| s > 0.0 && s <= 1.0)?;
        Ok(self)
    }

    /// How many times the long-term RTT a request may take before the limit
    /// shrinks (default [`DEFAULT_TOLERANCE`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] unless `tolerance >= 1`: below, the limit
    /// shrinks at the usual latency.
    pub fn tolerance(mut self, tolerance: f64) -> Result<Self, ConfigError> {
        self.tolerance = check_range("tolerance", "[1, inf)", tolerance, |t| t >= 1.0)?;
        Ok(self)
    }

    /// The windows the long-term RTT averages over (default
    /// [`DEFAULT_LONG_WINDOW`]): an exponential average with factor
    /// `2 / (windows + 1)`.
    #[must_use]
    pub fn long_window(mut self, windows: NonZeroU32) -> Self {
        self.long_window = windows.get();
        self
    }

    /// The first windows, whose plain average is the long-term RTT before
    /// the exponential average takes over (default [`DEFAULT_WARMUP`]); 0
    /// starts the average at the first window.
    #[must_use]
    pub fn warmup(mut self, windows: u32) -> Self {
        self.warmup = windows;
        self
    }

    /// The fewest samples in a window (default [`DEFAULT_MIN_WINDOW`]): a
    /// window holds one limit's worth of samples, and at least this many,
    /// so a low limit is not moved by two or three requests.
    #[must_use]
    pub fn min_window(mut self, samples: NonZeroU32) -> Self {
        self.min_window = samples.get();
        self
    }

    fn add_long(&mut self, rtt: f64) {
        self.windows = self.windows.saturating_add(1);
        if self.windows == 1 {
            self.long_rtt = rtt;
        } else if self.windows <= self.warmup {
            self.long_rtt += (rtt - self.long_rtt) / f64::from(self.windows);
        } else {
            let factor = 2.0 / (f64::from(self.long_window) + 1.0);
            self.long_rtt += (rtt - self.long_rtt) * factor;
        }
    }
}

impl Algorithm for Gradient2 {
    fn initial_limit(&self) -> u32 {
        self.initial
    }

    fn update(&mut self, sample: Sample, _now: Duration) -> u32 {
        self.window_sum += sample.latency.as_secs_f64();
        self.window_count += 1;
        self.window_in_flight = self.window_in_flight.max(sample.in_flight);
        if self.window_count < (self.limit as u32).max(self.min_window) {
            return self.limit as u32;
        }
        // A zero latency (a paused clock, an instant answer) would divide by
        // zero; a nanosecond is as good.
        let short = (self.window_sum / f64::from(self.window_count)).max(1e-9);
        let in_flight = self.window_in_flight;
        self.window_sum = 0.0;
        self.window_count = 0;
        self.window_in_flight = 0;

        let used = f64::from(in_flight) >= self.limit / 2.0;
        let at_min = self.limit <= f64::from(self.min);
        if at_min {
            // Nothing left to cut: this is the service's own latency now.
            self.windows = self.windows.saturating_add(1);
            self.long_rtt = short;
        } else if short < self.long_rtt {
            // The latency without the queueing of a higher limit, at once.
            self.windows = self.windows.saturating_add(1);
            self.long_rtt = short;
        } else if !used || self.windows < self.warmup.max(1) {
            self.add_long(short);
        }
        // Otherwise slower while the limit is used: the queueing the limit
        // let in, which the long-term RTT must not learn, or it drifts up
        // with the limit.
        let long = self.long_rtt;
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let queue_size = if gradient >= 1.0 {
            self.limit.sqrt()
        } else {
            0.0
        };
        let new = self.limit * gradient + queue_size;
        let mut new = self.limit * (1.0 - self.smoothing) + new * self.smoothing;
        if !used {
            new = new.min(self.limit);
        }
        self.limit = new.clamp(f64::from(self.min), f64::from(self.max));
        self.limit as u32
    }
}
