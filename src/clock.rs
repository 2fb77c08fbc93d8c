//! What the layers' hot-path clocks share: whether tokio's time can be
//! paused here, which decides between `tokio::time::Instant` (follows paused
//! time in tests) and the CPU's time-stamp counter (feature `fast-clock`).

/// Whether tokio's clock can be paused: only when tokio is built with
/// `test-util`, the feature that also adds `Builder::start_paused`. Method
/// resolution prefers an inherent method to a trait method of the same name,
/// so the fallback below answers exactly when tokio has no such method.
/// Asked once per process.
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

#[cfg(test)]
mod tests {
    #[test]
    fn tokio_time_can_pause_in_this_crates_tests() {
        // palisade's dev-dependencies build tokio with `test-util`.
        assert!(super::tokio_time_can_pause());
    }
}
