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
use super::tiers::{DefaultTier, Handle, Quotas};
use crate::key::Global;
use crate::store::OnStoreError;

/// Applies [`RateLimit`] to services: every service it builds, and every
/// clone of them, counts against one shared store.
///
/// The quotas are created once, by [`new`](Self::new) or
/// [`with_store`](Self::with_store), and shared by the layer's clones, the
/// services they build and every [`handle`](Self::handle): the setters
/// below ([`quota`](Self::quota), [`tier`](Self::tier),
/// [`namespace`](Self::namespace)) change them for all of these, as the
/// handle does at run time. Build two layers for two sets of quotas.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct RateLimitLayer<
    St = MemoryStore,
    K = Global,
    C = UnitCost,
    H = NoHeaders,
    T = DefaultTier,
> {
    config: Config<St, K, C, H, T>,
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
        let quotas = Arc::new(Quotas::new(Limits::new([quota])));
        Self {
            config: Config {
                store,
                snapshot: quotas.snapshot(),
                quotas,
                tier: DefaultTier,
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

impl<St, K, C, H, T> RateLimitLayer<St, K, C, H, T> {
    /// Adds another quota to the default tier: a request passes only when
    /// every quota allows it, and a denied request spends nothing from any
    /// of them.
    #[must_use]
    pub fn quota(self, quota: Quota) -> Self {
        self.config.quotas.add_quota(quota);
        self
    }

    /// Adds tier `name` with its own `quotas` (a request passes only when
    /// each allows it), for the requests [`tier_of`](Self::tier_of) puts in
    /// it; every other request is in the default tier, whose quotas are the
    /// ones given to `new` and [`quota`](Self::quota). Unnamed quotas are
    /// named after the tier, so `RateLimit-Policy` shows it and its buckets
    /// are its own. Adding a tier twice replaces its quotas.
    ///
    /// # Panics
    ///
    /// If `quotas` is empty, or `name` is not 1 to 64 printable ASCII
    /// characters (a [`Handle`] refuses those with an error instead).
    #[must_use]
    pub fn tier(self, name: &str, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.config
            .quotas
            .set_tier(name, quotas.into_iter().collect())
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Sets what chooses the tier of each request (default: [`DefaultTier`],
    /// every request in the default tier); see
    /// [`TierExtractor`](super::TierExtractor).
    #[must_use]
    pub fn tier_of<T2>(self, extractor: T2) -> RateLimitLayer<St, K, C, H, T2> {
        RateLimitLayer {
            config: self.config.map(|k| k, |c| c, |h| h, |_| extractor),
        }
    }

    /// Counts this layer apart from other limiters with the same quotas in
    /// the same store (for example, one namespace per route, each route
    /// with its own layer from `new`: clones share their quotas, namespace
    /// included), every tier included. The default is the empty namespace.
    #[must_use]
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        self.config.quotas.set_namespace(&namespace.into());
        self
    }

    /// The handle that reads and replaces this layer's quotas at run time,
    /// for the services it built and will build.
    pub fn handle(&self) -> Handle {
        Handle::new(self.config.quotas.clone())
    }

    /// Sets what requests are counted per: the caller key (default: one
    /// global key, [`Global`]). See [`crate::key`] for the built-in
    /// extractors.
    #[must_use]
    pub fn per<K2>(self, extractor: K2) -> RateLimitLayer<St, K2, C, H, T> {
        RateLimitLayer {
            config: self.config.map(|_| extractor, |c| c, |h| h, |t| t),
        }
    }

    /// Sets how many cells each request spends (default: one).
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<St, K, C2, H, T> {
        RateLimitLayer {
            config: self.config.map(|k| k, |_| cost, |h| h, |t| t),
        }
    }

    /// Sets what allowed responses carry (default: nothing). Over HTTP,
    /// [`http_headers`](Self::http_headers) is the usual choice.
    #[must_use]
    pub fn response_headers<H2>(self, headers: H2) -> RateLimitLayer<St, K, C, H2, T> {
        RateLimitLayer {
            config: self.config.map(|k| k, |c| c, |_| headers, |t| t),
        }
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to allowed responses.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http_headers(self) -> RateLimitLayer<St, K, C, super::RateLimitHeaders, T> {
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

    /// The limits of the default tier, as they are now.
    pub fn limits(&self) -> Limits {
        self.config.quotas.load().default.clone()
    }
}

impl<St, K, C, H, T> fmt::Debug for RateLimitLayer<St, K, C, H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RateLimitLayer")
            .field("name", &c.observer.name())
            .field("quotas", &c.quotas)
            .field("store", &std::any::type_name::<St>())
            .field("missing", &c.missing)
            .field("on_error", &c.on_error)
            .field("shadow", &c.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, St, K, C, H, T> Layer<S> for RateLimitLayer<St, K, C, H, T>
where
    St: Clone,
    K: Clone,
    C: Clone,
    H: Clone,
    T: Clone,
{
    type Service = RateLimit<S, St, K, C, H, T>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut config = self.config.clone();
        config.snapshot = config.quotas.snapshot();
        RateLimit::new(inner, Arc::new(config))
    }
}
