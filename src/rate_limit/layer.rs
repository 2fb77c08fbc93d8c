//! The layer and its settings.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::headers::NoHeaders;
use super::observe::Observer;
use super::quota::Quota;
use super::service::RateLimit;
use super::store::memory::MemoryStore;
use super::store::{Limits, Store};
use crate::key::Global;
use crate::store::OnStoreError;

/// What the layer does with a request whose key extractor finds no key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Reject it with [`Error::MissingKey`](super::Error::MissingKey)
    /// (`400 Bad Request` over HTTP).
    #[default]
    Reject,
    /// Count it under this key, shared by every keyless request.
    Fallback(Arc<str>),
}


/// How many cells a request spends. [`UnitCost`] (the default) spends one;
/// any `Fn(&Req) -> u32` closure is a cost.
pub trait Cost<Req>: Clone + Send + Sync + 'static {
    /// The cells `req` spends.
    fn cost(&self, req: &Req) -> u32;
}

/// Every request costs one cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> Cost<Req> for UnitCost {
    fn cost(&self, _: &Req) -> u32 {
        1
    }
}

impl<Req, F> Cost<Req> for F
where
    F: Fn(&Req) -> u32 + Clone + Send + Sync + 'static,
{
    fn cost(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// Applies [`RateLimit`] to services: every service it builds, and every
/// clone of them, counts against one shared store.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct RateLimitLayer<St = MemoryStore, K = Global, C = UnitCost, H = NoHeaders> {
    pub(crate) store: St,
    pub(crate) limits: Limits,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) headers: H,
    pub(crate) missing: MissingKey,
    pub(crate) on_error: OnStoreError,
    pub(crate) shadow: bool,
    pub(crate) observer: Arc<Observer>,
}

impl RateLimitLayer {
    /// A layer that enforces `quota` in a new [`MemoryStore`], with every
    /// request under one global key.
    pub fn memory(quota: Quota) -> Self {
        Self::with_store(MemoryStore::new(), quota)
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl RateLimitLayer<super::RedisStore> {
    /// A layer that enforces `quota` in Redis, shared by every instance that
    /// uses the same Redis, key prefix and scope.
    pub fn redis(store: super::RedisStore, quota: Quota) -> Self {
        Self::with_store(store, quota)
    }
}

impl<St: Store> RateLimitLayer<St> {
    /// A layer that enforces `quota` in `store`.
    pub fn with_store(store: St, quota: Quota) -> Self {
        Self {
            store,
            limits: Limits::new([quota]),
            key: Global,
            cost: UnitCost,
            headers: NoHeaders,
            missing: MissingKey::Reject,
            on_error: OnStoreError::FailOpen,
            shadow: false,
            observer: Observer::unnamed(),
        }
    }
}

impl<St, K, C, H> RateLimitLayer<St, K, C, H> {
    /// Adds another quota: a request passes only when every quota allows
    /// it, and a denied request spends nothing from any of them.
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.limits = self.limits.with(quota);
        self
    }

    /// Counts this layer apart from other limiters with the same quotas in
    /// the same store (for example, one scope per route).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.limits = self.limits.scoped(scope);
        self
    }

    /// Sets what requests are counted under (default: one global key). See
    /// [`crate::key`] for the built-in extractors.
    #[must_use]
    pub fn key<K2>(self, key: K2) -> RateLimitLayer<St, K2, C, H> {
        RateLimitLayer {
            store: self.store,
            limits: self.limits,
            key,
            cost: self.cost,
            headers: self.headers,
            missing: self.missing,
            on_error: self.on_error,
            shadow: self.shadow,
            observer: self.observer,
        }
    }

    /// Sets how many cells each request spends (default: one).
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<St, K, C2, H> {
        RateLimitLayer {
            store: self.store,
            limits: self.limits,
            key: self.key,
            cost,
            headers: self.headers,
            missing: self.missing,
            on_error: self.on_error,
            shadow: self.shadow,
            observer: self.observer,
        }
    }

    /// Sets what allowed responses carry (default: nothing). Over HTTP,
    /// [`http_headers`](Self::http_headers) is the usual choice.
    #[must_use]
    pub fn response_headers<H2>(self, headers: H2) -> RateLimitLayer<St, K, C, H2> {
        RateLimitLayer {
            store: self.store,
            limits: self.limits,
            key: self.key,
            cost: self.cost,
            headers,
            missing: self.missing,
            on_error: self.on_error,
            shadow: self.shadow,
            observer: self.observer,
        }
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to allowed responses.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http_headers(self) -> RateLimitLayer<St, K, C, super::RateLimitHeaders> {
        self.response_headers(super::RateLimitHeaders)
    }

    /// Sets what happens to a request without a key (default: reject).
    #[must_use]
    pub fn missing_key(mut self, missing: MissingKey) -> Self {
        self.missing = missing;
        self
    }

    /// Sets what happens when the store fails (default: fail open).
    #[must_use]
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_error = policy;
        self
    }

    /// Shadow mode: decide and log as usual, but never reject, so a new
    /// limit can be watched before it is enforced.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the route or the client class it
    /// limits; the default is
    /// [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME). See
    /// [`crate::observability`].
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.observer = Observer::new(name.into());
        self
    }

    /// The limits this layer enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl<St, K, C, H> fmt::Debug for RateLimitLayer<St, K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.observer.name())
            .field("limits", &self.limits)
            .field("store", &std::any::type_name::<St>())
            .field("missing", &self.missing)
            .field("on_error", &self.on_error)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, St, K, C, H> Layer<S> for RateLimitLayer<St, K, C, H>
where
    St: Clone,
    K: Clone,
    C: Clone,
    H: Clone,
{
    type Service = RateLimit<S, St, K, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::new(self.clone()))
    }
}
