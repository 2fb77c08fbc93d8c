//! Where a bulkhead's permits live: [`MemoryStore`] in this process,
//! `RedisStore` (feature `redis`) shared by every instance.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::load_shed::{Priority, Queue, Reason};

pub use self::memory::{DEFAULT_MAX_KEYS, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{
    DEFAULT_LEASE, DEFAULT_RETRY_INTERVAL, DEFAULT_TIMEOUT, RedisPermit, RedisStore,
};
pub use crate::store::StoreError;

pub(crate) mod memory;
#[cfg(feature = "redis")]
mod redis;

/// One request asking a store for a permit.
#[derive(Debug, Clone)]
pub struct Admission {
    pub(crate) key: Arc<str>,
    pub(crate) limit: NonZeroU32,
    pub(crate) queue: Option<Queue>,
    pub(crate) priority: Priority,
}

impl Admission {
    /// The key the permit counts under, namespaced by the layer.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The most permits of the key held at once.
    pub fn limit(&self) -> NonZeroU32 {
        self.limit
    }

    /// How requests wait for a permit; `None`: refuse at once.
    pub fn queue(&self) -> Option<Queue> {
        self.queue
    }

    /// The request's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }
}

/// Why a store gave no permit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The key is saturated.
    #[error("refused: {}", .0.as_str())]
    Shed(Reason),
    /// The store failed.
    #[error("store unavailable")]
    Store {
        /// Why.
        #[source]
        error: StoreError,
        /// The permit of this process the store took before it failed, if
        /// any: a request let through by
        /// [`OnStoreError::FailOpen`](crate::store::OnStoreError::FailOpen)
        /// holds it, so while the store is down each instance still keeps
        /// to the limit on its own.
        local: Option<LocalPermit>,
    },
}

/// A permit of this process's own gate, released when dropped. See
/// [`Refused::Store`].
#[derive(Debug)]
pub struct LocalPermit {
    _permit: crate::load_shed::gate::Permit,
}

impl LocalPermit {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(permit: crate::load_shed::gate::Permit) -> Self {
        Self { _permit: permit }
    }
}

/// Keeps a bulkhead's permits, atomically: however many services, clones
/// and instances ask at once, at most [`Admission::limit`] permits of one
/// key are held.
pub trait Store: Clone + Send + Sync + 'static {
    /// A held permit; dropping it releases it, wherever its holder stopped.
    type Permit: Send + 'static;

    /// Waits for a permit as `admission` allows (its queue).
    fn acquire(
        &self,
        admission: Admission,
    ) -> impl Future<Output = Result<Self::Permit, Refused>> + Send;

    /// A permit at once, when the store can give one without waiting or a
    /// round trip (a free permit in this process); `None` sends the request
    /// to [`acquire`](Self::acquire). The layer calls it first, so a
    /// request that finds a free permit costs no allocation. The default is
    /// `None`.
    fn try_acquire_now(&self, admission: &Admission) -> Option<Self::Permit> {
        let _ = admission;
        None
    }

    /// Ready when a request for `admission`'s key would find a permit or a
    /// queue place now; otherwise registers `cx` to be woken when one may
    /// have freed. The default is always ready (a store that cannot tell
    /// without a round trip decides in [`acquire`](Self::acquire)).
    fn poll_capacity(&self, admission: &Admission, cx: &mut Context<'_>) -> Poll<()> {
        let _ = (admission, cx);
        Poll::Ready(())
    }

    /// Applies a new `limit` at once to the keys of `namespace` whose limit
    /// the store keeps in this process (the keys of the empty namespace are
    /// every key): a higher limit lets waiting requests in at once, a lower
    /// one lets nobody in until fewer than `limit` permits are held, and
    /// takes no permit back. The layer's [`Handle`](super::Handle) calls
    /// it; a key found later follows the limit of the next [`Admission`]
    /// for it. The default does nothing, for a store that reads the limit
    /// from each admission.
    fn set_limit(&self, namespace: &str, limit: NonZeroU32) {
        let _ = (namespace, limit);
    }

    /// The `store` label of this store's metrics: `memory`, `redis`.
    fn kind(&self) -> &'static str;
}
