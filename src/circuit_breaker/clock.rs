//! The clock of the breaker's hot path: slow-call timing and the time
//! window's buckets.

use tokio::time::Instant;

/// Nanoseconds since the breaker was created, from the cheapest clock that
/// still follows tokio's paused time where it can be paused.
///
/// `tokio::time::Instant` (about 24 ns a read here) wherever tokio's time can
/// be paused, that is in the tests of a crate that builds tokio with
/// `test-util`; with feature `fast-clock`, everywhere else, the CPU's
/// time-stamp counter through `quanta` (a few nanoseconds, calibrated against
/// the OS clock once per process).
#[derive(Debug)]
pub(crate) enum Clock {
    Tokio {
        origin: Instant,
    },
    #[cfg(feature = "fast-clock")]
    Fast {
        clock: quanta::Clock,
        origin: u64,
    },
}

impl Clock {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "fast-clock")]
        if !crate::clock::tokio_time_can_pause() {
            let clock = quanta::Clock::new();
            let origin = clock.raw();
            return Clock::Fast { clock, origin };
        }
        Clock::Tokio {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the clock's creation.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Clock::Tokio { origin } => {
                u64::try_from(Instant::now().saturating_duration_since(*origin).as_nanos())
                    .unwrap_or(u64::MAX - 1)
            }
            #[cfg(feature = "fast-clock")]
            Clock::Fast { clock, origin } => clock.delta_as_nanos(*origin, clock.raw()),
        }
    }
}
