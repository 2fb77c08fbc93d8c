//! What an adaptive limit learns from: one sample per finished request.

use std::time::Duration;

/// One finished request, as a limit algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// How long the inner service took, from the permit to the response
    /// (queue time excluded: it measures the limiter, not the service).
    pub latency: Duration,
    /// Requests in flight when this one was admitted, itself included.
    pub in_flight: u32,
    /// Whether the request failed in a way that signals overload (by
    /// default: the inner service returned an error).
    pub dropped: bool,
}

impl Sample {
    /// A sample (for tests and custom limiters).
    pub fn new(latency: Duration, in_flight: u32, dropped: bool) -> Self {
        Self {
            latency,
            in_flight,
            dropped,
        }
    }
}

/// Computes a concurrency limit from samples: [`Aimd`](super::Aimd),
/// [`Gradient2`](super::Gradient2), or your own.
///
/// The limiter calls [`update`](Self::update) under a lock, once per
/// finished request, so an implementation needs no synchronisation; keep it
/// cheap (a few arithmetic operations).
pub trait Algorithm: Send + 'static {
    /// The limit before any sample.
    fn initial_limit(&self) -> u32;

    /// Takes one sample at `now` (time since the limiter started; lets
    /// paused-time tests drive time-based algorithms) and returns the new
    /// limit, at least 1.
    fn update(&mut self, sample: Sample, now: Duration) -> u32;
}

/// The starting limit of [`Aimd`](super::Aimd) and
/// [`Gradient2`](super::Gradient2): 20, as in Netflix's concurrency-limits.
pub const DEFAULT_INITIAL_LIMIT: u32 = 20;
/// The lowest limit an algorithm goes to by default: 1.
pub const DEFAULT_MIN_LIMIT: u32 = 1;
/// The highest limit an algorithm goes to by default: 1,000.
pub const DEFAULT_MAX_LIMIT: u32 = 1_000;

/// Checks `min <= initial <= max` with `min >= 1`: a zero limit would
/// refuse every request for good.
pub(crate) fn check_bounds(
    min: u32,
    initial: u32,
    max: u32,
) -> Result<(), crate::load_shed::ConfigError> {
    if min == 0 || min > initial || initial > max {
        return Err(crate::load_shed::ConfigError::LimitBounds { min, initial, max });
    }
    Ok(())
}

/// Checks that `value` is finite and within `ok`.
pub(crate) fn check_range(
    name: &'static str,
    range: &'static str,
    value: f64,
    ok: impl FnOnce(f64) -> bool,
) -> Result<f64, crate::load_shed::ConfigError> {
    if value.is_finite() && ok(value) {
        Ok(value)
    } else {
        Err(crate::load_shed::ConfigError::OutOfRange { name, range, value })
    }
}
