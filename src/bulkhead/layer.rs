//! The layer and its settings.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower_layer::Layer;

use super::config::{Config, DEFAULT_RETRY_AFTER};
use super::observe::Observer;
use super::service::Bulkhead;
use super::store::{MemoryStore, Store};
use crate::key::Global;
use crate::load_shed::{Queue, Uniform};
use crate::store::OnStoreError;

/// Applies [`Bulkhead`] to services: every service it builds, and every
/// clone of them, shares one set of permits.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct BulkheadLayer<St = MemoryStore, K = Global, P = Uniform> {
    config: Config<St, K, P>,
}

impl BulkheadLayer {
    /// A layer that lets at most `max_in_flight` requests in at once
    /// (per key, with [`per`](Self::per)), refusing the rest at once unless
    /// a [`queue`](Self::queue) is set; permits in a new [`MemoryStore`].
    pub fn new(max_in_flight: NonZeroU32) -> Self {
        Self::with_store(MemoryStore::new(), max_in_flight)
    }
}

impl<St: Store> BulkheadLayer<St> {
    /// As [`new`](BulkheadLayer::new), with permits in `store`: another
    /// [`MemoryStore`], or a `RedisStore` for a limit shared by every
    /// instance.
    pub fn with_store(store: St, max_in_flight: NonZeroU32) -> Self {
        Self {
            config: Config {
                store,
                per: Global,
                priority: Uniform,
                limit: max_in_flight,
                queue: None,
                namespace: Arc::from(""),
                retry_after: DEFAULT_RETRY_AFTER,
                on_error: OnStoreError::FailClosed,
                back_pressure: true,
                observer: Observer::unnamed(),
                global: OnceLock::new(),
            },
        }
    }
}

impl<St, K, P> BulkheadLayer<St, K, P> {
    /// Sets what permits are counted per: a route, a tenant, a downstream
    /// (default: one global set, [`Global`]). A request without a key counts
    /// under the empty key, shared by every keyless request.
    #[must_use]
    pub fn per<K2>(self, extractor: K2) -> BulkheadLayer<St, K2, P> {
        let c = self.config;
        BulkheadLayer {
            config: Config {
                store: c.store,
                per: extractor,
                priority: c.priority,
                limit: c.limit,
                queue: c.queue,
                namespace: c.namespace,
                retry_after: c.retry_after,
                on_error: c.on_error,
                back_pressure: c.back_pressure,
                observer: c.observer,
                global: OnceLock::new(),
            },
        }
    }

    /// Sets how a request's [`Priority`](crate::load_shed::Priority) is read
    /// (default: every request `Normal`). See [`crate::load_shed`].
    ///
    /// This turns [`back_pressure`](Self::back_pressure) off: `poll_ready`
    /// cannot see a request's priority, and a `NeverShed` health check must
    /// not wait behind a saturated gate. Turn it on again after, if no
    /// request is `NeverShed`.
    #[must_use]
    pub fn priority<P2>(self, extractor: P2) -> BulkheadLayer<St, K, P2> {
        let mut c = self.config;
        c.back_pressure = false;
        BulkheadLayer {
            config: Config {
                store: c.store,
                per: c.per,
                priority: extractor,
                limit: c.limit,
                queue: c.queue,
                namespace: c.namespace,
                retry_after: c.retry_after,
                on_error: c.on_error,
                back_pressure: c.back_pressure,
                observer: c.observer,
                global: OnceLock::new(),
            },
        }
    }

    /// Lets requests wait for a permit, as `queue` bounds them (default: no
    /// queue, a saturated key refuses at once).
    #[must_use]
    pub fn queue(mut self, queue: Queue) -> Self {
        self.config.queue = Some(queue);
        self
    }

    /// Whether `poll_ready` reports saturation (default: on, until
    /// [`priority`](Self::priority) is set). With the [`Global`] key, the
    /// service is then not ready while every permit is taken and the queue
    /// (if any) is full, and is woken when one frees, as tower's
    /// `ConcurrencyLimit` is: a tower `LoadShed` or `Buffer` above it sees
    /// the back-pressure. With a per-key bulkhead `poll_ready` cannot know
    /// the key, so the decision is always made in `call`.
    #[must_use]
    pub fn back_pressure(mut self, on: bool) -> Self {
        self.config.back_pressure = on;
        self
    }

    /// Keeps this layer's permits apart from other bulkheads in the same
    /// store (default: the empty namespace).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<Arc<str>>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// The `Retry-After` of a refusal (default [`DEFAULT_RETRY_AFTER`]).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Sets what happens when the store fails (default:
    /// [`OnStoreError::FailClosed`]: a bulkhead exists to protect something
    /// that cannot take more load). In-memory stores never fail.
    #[must_use]
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.config.on_error = policy;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing events
    /// (the `name` field).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.observer = Observer::new(name.into());
        self
    }

    /// The store the permits are kept in.
    pub fn store(&self) -> &St {
        &self.config.store
    }
}

impl<St, K, P> fmt::Debug for BulkheadLayer<St, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("BulkheadLayer")
            .field("name", &c.observer.name())
            .field("max_in_flight", &c.limit)
            .field("queue", &c.queue)
            .field("namespace", &c.namespace)
            .field("store", &std::any::type_name::<St>())
            .field("on_error", &c.on_error)
            .field("back_pressure", &c.back_pressure)
            .finish_non_exhaustive()
    }
}

impl<S, St: Clone, K: Clone, P: Clone> Layer<S> for BulkheadLayer<St, K, P> {
    type Service = Bulkhead<S, St, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, Arc::new(self.config.clone()))
    }
}
