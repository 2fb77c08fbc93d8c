//! What the layers' hot-path clocks share: whether tokio's time can be
//! paused here, which decides between `tokio::time::Instant` (follows paused
//! time in tests) and the CPU's time-stamp counter (feature `fast-clock`).

use tokio::time::Instant;

/// A moment read as cheaply as the build allows, turned into a tokio
/// `Instant` only when it is needed (a timer is armed): the CPU's time-stamp
/// counter with feature `fast-clock` wherever tokio's time cannot be paused
/// (about half the cost of `Instant::now` here), tokio's clock otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stamp {
    Tokio(Instant),
    #[cfg(feature = "fast-clock")]
    Fast(u64),
}

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        #[cfg(feature = "fast-clock")]
        if !tokio_time_can_pause() {
            return Stamp::Fast(fast_clock().raw());
        }
        Stamp::Tokio(Instant::now())
    }

    /// The same moment on tokio's clock.
    pub(crate) fn to_instant(self) -> Instant {
        match self {
            Stamp::Tokio(instant) => instant,
            #[cfg(feature = "fast-clock")]
            Stamp::Fast(raw) => {
                let clock = fast_clock();
                let elapsed =
                    std::time::Duration::from_nanos(clock.delta_as_nanos(raw, clock.raw()));
                let now = Instant::now();
                now.checked_sub(elapsed).unwrap_or(now)
            }
        }
    }
}

#[cfg(feature = "fast-clock")]
fn fast_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Whether tokio's clock can be paused: only when tokio is built with
/// `test-util`, the feature that also adds `Builder::start_paused`. Method
/// resolution prefers an inherent method to a trait method of the same name,
/// so the fallback below answers exactly when tokio has no such method.
/// Asked once per process.
#[cfg(feature = "fast-clock")]
pub(crate) fn tokio_time_can_pause() -> bool {
    static CAN_PAUSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN_PAUSE.get_or_init(|| {
        // Unused where tokio has `test-util`.
        #[allow(dead_code)]
        struct CannotPause;
        #[allow(dead_code)]
        trait Fallback {
            fn start_paused(&mut self, _: bool) -> CannotPause {
                CannotPause
            }
        }
        impl Fallback for tokio::runtime::Builder {}
        trait Answer {
            fn can_pause(&self) -> bool;
        }
        impl Answer for &mut tokio::runtime::Builder {
            fn can_pause(&self) -> bool {
                true
            }
        }
        impl Answer for CannotPause {
            fn can_pause(&self) -> bool {
                false
            }
        }
        tokio::runtime::Builder::new_current_thread()
            .start_paused(false)
            .can_pause()
    })
}

#[cfg(all(test, feature = "fast-clock"))]
mod tests {
    #[test]
    fn a_fast_stamp_is_the_same_moment_on_tokios_clock() {
        let before = tokio::time::Instant::now();
        let stamp = super::Stamp::Fast(super::fast_clock().raw());
        let instant = stamp.to_instant();
        let after = tokio::time::Instant::now();
        // Calibration error aside, the moment read lies between the two.
        let slack = std::time::Duration::from_millis(5);
        assert!(instant + slack >= before && instant <= after + slack);
    }

    #[test]
    fn tokio_time_can_pause_in_this_crates_tests() {
        // palisade's dev-dependencies build tokio with `test-util`.
        assert!(super::tokio_time_can_pause());
    }
}
