//! Reading a running limiter from outside the service stack.

use std::sync::Arc;

use super::config::Shared;

/// Reads one adaptive limiter: its current limit, the requests in flight
/// and queued.
///
/// Cloning a handle is cheap; every clone reads the limiter that every
/// service of its layer uses.
///
/// ```
/// use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd};
///
/// let layer = AdaptiveConcurrencyLayer::new(Aimd::new().bounds(1, 10, 100)?);
/// let handle = layer.handle();
/// assert_eq!(handle.limit(), 10);
/// assert_eq!(handle.in_flight(), 0);
/// # Ok::<(), palisade::load_shed::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.shared.gate.limit()
    }

    /// The requests holding a permit now (`NeverShed` ones are not
    /// counted).
    pub fn in_flight(&self) -> u32 {
        self.shared.gate.in_flight()
    }

    /// The requests waiting for a permit now.
    pub fn queued(&self) -> usize {
        self.shared.gate.queued()
    }
}
