//! Changing a running bulkhead's limit from outside the service stack.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use super::config::Shared;
use super::store::{MemoryStore, Store};

/// Reads and changes one [`BulkheadLayer`](super::BulkheadLayer)'s limit
/// at run time: for the layer, its clones, and every service they built or
/// will build.
///
/// [`set_max_in_flight`](Self::set_max_in_flight) never cancels a running
/// call. A higher limit lets queued requests in at once; a lower one lets
/// nobody in until the calls still running have finished below it (their
/// permits are retired as they end), and from then on at most the new
/// limit run at once. Cloning a handle is cheap; every clone steers the
/// same limit.
///
/// A layer's clones share one limit and one handle: give a layer its
/// [`namespace`](super::BulkheadLayer::namespace) before cloning it (a
/// handle applies a new limit at once to the keys of the namespace set
/// last; the keys of another follow it from their next request).
///
/// ```
/// use std::num::NonZeroU32;
/// use palisade::bulkhead::BulkheadLayer;
///
/// let layer = BulkheadLayer::new(NonZeroU32::new(10).unwrap());
/// let handle = layer.handle();
/// handle.set_max_in_flight(NonZeroU32::new(4).unwrap());
/// assert_eq!(layer.max_in_flight().get(), 4);
/// assert_eq!(handle.max_in_flight().get(), 4);
/// ```
#[derive(Clone)]
pub struct Handle<St = MemoryStore> {
    store: St,
    shared: Arc<Shared>,
}

impl<St: Store> Handle<St> {
    pub(crate) fn new(store: St, shared: Arc<Shared>) -> Self {
        Self { store, shared }
    }

    /// The most requests in flight at once (per key) now.
    pub fn max_in_flight(&self) -> NonZeroU32 {
        self.shared.max_in_flight()
    }

    /// Replaces the limit (per key) from now on, for every key of the
    /// layer's [`namespace`](super::BulkheadLayer::namespace).
    ///
    /// With a [`MemoryStore`], every key's requests follow it at once;
    /// with a `RedisStore`, this process's waiters follow it at once, and
    /// the fleet-wide limit is the one each lease request carries: a
    /// request's next lease request carries it, and a request already
    /// waiting for a lease keeps asking with the limit it was made with.
    /// Every instance of a fleet should be given the same limit.
    pub fn set_max_in_flight(&self, max_in_flight: NonZeroU32) {
        self.shared.set_max_in_flight(max_in_flight);
        self.store
            .set_limit(&self.shared.namespace(), max_in_flight);
        tracing::debug!(
            layer = "bulkhead",
            max_in_flight = max_in_flight.get(),
            "limit changed"
        );
    }
}

impl<St> fmt::Debug for Handle<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("max_in_flight", &self.shared.max_in_flight())
            .field("namespace", &self.shared.namespace())
            .finish_non_exhaustive()
    }
}
