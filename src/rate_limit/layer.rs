//! The layer and its settings.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::config::{Config, OnMissingCallerKey, UnitCost};
use super::headers::NoHeaders;
use super::limits::Limits;
use super::observe::Observer;
use super::quota::Quota;
use super::service::RateLimit;
use super::store::Store;
use super::store::memory::MemoryStore;
use crate::key::Global;
use crate::store::OnStoreError;

/// Applies [`RateLimit`] to services: every service it builds, and every
/// clone of them, counts against one shared store.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct RateLimitLayer<St = MemoryStore, K = Global, C = UnitCost, H = NoHeaders> {
    config: Config<St, K, C, H>,
}

impl RateLimitLayer {
    /// A layer that enforces `quota` in a new, bounded [`MemoryStore`]
    /// ([`MemoryStore::new`]), with every request under one global key.
    pub fn new(quota: Quota) -> Self {
        Self::with_store(MemoryStore::new(), quota)
    }
}

impl<St: Store> RateLimitLayer<St> {
    /// A layer that enforces `quota` in `store` (such as a
    /// [`MemoryStore`] of another size, or a `RedisStore` shared by every
    /// instance), with every request under one global key.
    pub fn with_store(store: St, quota: Quota) -> Self {
        Self {
            config: Config {
                store,
                limits: Limits::new([quota]),
                per: Global,
                cost: UnitCost,
                headers: NoHeaders,
                missing: OnMissingCallerKey::Reject,
                on_error: OnStoreError::FailOpen,
                shadow: false,
                observer: Observer::unnamed(),
            },
        }
    }
}

impl<St, K, C, H> RateLimitLayer<St, K, C, H> {
    /// Adds another quota: a request passes only when every quota allows
    /// it, and a denied request spends nothing from any of them.
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.config.limits = self.config.limits.with(quota);
        self
    }

    /// Counts this layer apart from other limiters with the same quotas in
    /// the same store (for example, one namespace per route). The default
    /// is the empty namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.limits = self.config.limits.namespaced(namespace);
        self
    }

    /// Sets what requests are counted per: the caller key (default: one
    /// global key, [`Global`]). See [`crate::key`] for the built-in
    /// extractors.
    #[must_use]
    pub fn per<K2>(self, extractor: K2) -> RateLimitLayer<St, K2, C, H> {
        RateLimitLayer {
            config: self.config.map(|_| extractor, |c| c, |h| h),
        }
    }

    /// Sets how many cells each request spends (default: one).
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<St, K, C2, H> {
        RateLimitLayer {
            config: self.config.map(|k| k, |_| cost, |h| h),
        }
    }

    /// Sets what allowed responses carry (default: nothing). Over HTTP,
    /// [`http_headers`](Self::http_headers) is the usual choice.
    #[must_use]
    pub fn response_headers<H2>(self, headers: H2) -> RateLimitLayer<St, K, C, H2> {
        RateLimitLayer {
            config: self.config.map(|k| k, |c| c, |_| headers),
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
    pub fn on_missing_caller_key(mut self, missing: OnMissingCallerKey) -> Self {
        self.config.missing = missing;
        self
    }

    /// Sets what happens when the store fails (default:
    /// [`OnStoreError::FailOpen`]: a limiter must not take the service down
    /// with it).
    #[must_use]
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.config.on_error = policy;
        self
    }

    /// Shadow mode: decide and log as usual, but never reject, so a new
    /// limit can be watched before it is enforced (default: off).
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.config.shadow = shadow;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the route or the client class it
    /// limits; the default is
    /// [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME). See
    /// [`crate::observability`].
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.observer = Observer::new(name.into());
        self
    }

    /// The limits this layer enforces.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }
}

impl<St, K, C, H> fmt::Debug for RateLimitLayer<St, K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RateLimitLayer")
            .field("name", &c.observer.name())
            .field("limits", &c.limits)
            .field("store", &std::any::type_name::<St>())
            .field("missing", &c.missing)
            .field("on_error", &c.on_error)
            .field("shadow", &c.shadow)
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
        RateLimit::new(inner, Arc::new(self.config.clone()))
    }
}
