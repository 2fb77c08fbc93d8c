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
