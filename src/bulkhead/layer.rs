//! The layer and its settings.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::config::{Config, DEFAULT_RETRY_AFTER, Shared};
use super::handle::Handle;
use super::observe::Observer;
use super::service::Bulkhead;
use super::store::{MemoryStore, Store};
use crate::key::Global;
use crate::load_shed::{Queue, Uniform};
use crate::store::OnStoreError;

/// Applies [`Bulkhead`] to services: every service it builds, and every
/// clone of them, shares one set of permits.
///
/// The limit is created once, by [`new`](Self::new) or
/// [`with_store`](Self::with_store), and shared by the layer's clones, the
/// services they build and every [`handle`](Self::handle), which changes it
/// at run time.
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
                shared: Shared::new(max_in_flight),
                queue: None,
                namespace: Arc::from(""),
                retry_after: DEFAULT_RETRY_AFTER,
                on_error: OnStoreError::FailClosed,
                back_pressure: false,
                observer: Observer::unnamed(),
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
                shared: c.shared,
                queue: c.queue,
                namespace: c.namespace,
                retry_after: c.retry_after,
                on_error: c.on_error,
                back_pressure: c.back_pressure,
                observer: c.observer,
            },
        }
    }

    /// Sets how a request's [`Priority`](crate::load_shed::Priority) is read
    /// (default: every request `Normal`). See [`crate::load_shed`].
    #[must_use]
    pub fn priority<P2>(self, extractor: P2) -> BulkheadLayer<St, K, P2> {
        let c = self.config;
        BulkheadLayer {
            config: Config {
                store: c.store,
                per: c.per,
                priority: extractor,
                shared: c.shared,
                queue: c.queue,
                namespace: c.namespace,
                retry_after: c.retry_after,
                on_error: c.on_error,
                back_pressure: c.back_pressure,
                observer: c.observer,
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

    /// Whether `poll_ready` reports saturation (default: off). With the
    /// [`Global`] key, the service is then not ready while every permit is
    /// taken and the queue (if any) is full, and is woken when one frees, as
    /// tower's `ConcurrencyLimit` is, so a tower `LoadShed` or `Buffer` above
    /// it sees the back-pressure.
    ///
    /// Off by default because a caller that awaits readiness (axum's router,
    /// `ServiceExt::oneshot`) would then wait in `poll_ready` without bound
    /// instead of being refused at once or after the queue's maximum wait,
    /// and `poll_ready` cannot see a `NeverShed` priority. Turn it on under
    /// a `LoadShed` or a bounded `Buffer`. A per-key bulkhead cannot know
    /// the key in `poll_ready` and always decides in `call`.
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
        self.config
            .shared
            .set_namespace(self.config.namespace.clone());
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

    /// The most requests in flight at once (per key), as the
    /// [`handle`](Self::handle) last set it.
    pub fn max_in_flight(&self) -> NonZeroU32 {
        self.config.limit()
    }
}

impl<St: Store, K, P> BulkheadLayer<St, K, P> {
    /// The handle that changes this layer's limit at run time, for the
    /// services it built and will build, and for its clones. See
    /// [`Handle`].
    pub fn handle(&self) -> Handle<St> {
        Handle::new(self.config.store.clone(), self.config.shared.clone())
    }
}

impl<St, K, P> fmt::Debug for BulkheadLayer<St, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("BulkheadLayer")
            .field("name", &c.observer.name())
            .field("max_in_flight", &c.limit())
            .field("queue", &c.queue)
            .field("namespace", &c.namespace)
            .field("store", &std::any::type_name::<St>())
            .field("on_error", &c.on_error)
            .field("back_pressure", &c.back_pressure)
            .finish_non_exhaustive()
    }
}

impl<S, St: Clone, K: Clone + 'static, P: Clone> Layer<S> for BulkheadLayer<St, K, P> {
    type Service = Bulkhead<S, St, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, Arc::new(self.config.clone()))
    }
}
