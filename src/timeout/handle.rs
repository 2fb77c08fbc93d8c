//! Changing a running timeout from outside the service stack.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::config::SharedTimeout;

/// Reads and changes one [`TimeoutLayer`](super::TimeoutLayer)'s timeout at
/// run time: for the layer, its clones, and every service they built or
/// will build.
///
/// A change applies from the next call on (for a per-request timeout, as
/// the new maximum); a call already running keeps the deadline it got when
/// it was made. Cloning a handle is cheap; every clone steers the same
/// timeout. A call reads the timeout with one atomic load.
///
/// ```
/// use std::time::Duration;
/// use palisade::timeout::TimeoutLayer;
///
/// let layer = TimeoutLayer::new(Duration::from_secs(3));
/// let handle = layer.handle();
/// handle.set_timeout(Duration::from_millis(500));
/// assert_eq!(layer.timeout(), Duration::from_millis(500));
/// assert_eq!(handle.timeout(), Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct Handle {
    timeout: Arc<SharedTimeout>,
}

impl Handle {
    pub(crate) fn new(timeout: Arc<SharedTimeout>) -> Self {
        Self { timeout }
    }

    /// The timeout now: the budget of every call, or with
    /// [`per_request`](super::TimeoutLayer::per_request) the maximum.
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// Replaces the timeout from the next call on; calls already running
    /// keep their deadline.
    ///
    /// A timeout longer than `u64::MAX` nanoseconds (about 584 years, such
    /// as [`Duration::MAX`]) is kept as that; a deadline is never set more
    /// than about thirty years out anyway. A zero timeout fails calls at
    /// once (a fixed one lets through only an answer ready when first
    /// polled).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(timeout);
        tracing::debug!(layer = "timeout", ?timeout, "timeout changed");
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("timeout", &self.timeout())
            .finish()
    }
}
