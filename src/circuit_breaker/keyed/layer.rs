//! The keyed circuit breaker layer.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tower_layer::Layer;

use super::super::classify::ErrorIsFailure;
use super::super::config::{Config, Rate};
use super::handle::KeyedHandle;
use super::registry::Registry;
use super::service::KeyedCircuitBreaker;

/// Keeps one circuit breaker per key, the key taken from each request by a
/// function given to [`per`](Self::per) (`Fn(&Req) -> K`), such as the
/// downstream host of a client request.
///
/// [`new`](Self::new) creates the breakers' registry once; no method of the
/// layer replaces it, so a [`handle`](Self::handle) taken at any time sees
/// the breakers of every service built from this layer and its clones.
///
/// Memory is bounded: past [`max_keys`](Self::max_keys) (default
/// [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS)) the least recently used
/// key is forgotten, closed keys first. An optional [`max_open_share`](Self::max_open_share) caps the
/// share of keys open at once, as Envoy caps outlier ejections: a key that
/// would trip past the cap stays closed (one key may always open).
///
/// ```
/// use palisade::circuit_breaker::{Config, KeyedCircuitBreakerLayer};
/// use palisade::circuit_breaker::Rate;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = KeyedCircuitBreakerLayer::new(Config::default())
///     .per(|req: &(String, u32)| req.0.clone())
///     .max_open_share(Rate::new(0.3).unwrap());
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|(_host, n): (String, u32)| async move { Ok::<_, std::io::Error>(n) }));
/// assert_eq!(svc.oneshot(("billing".to_owned(), 1)).await.unwrap(), 1);
/// # }
/// ```
pub struct KeyedCircuitBreakerLayer<K, X = Unkeyed, C = ErrorIsFailure> {
    registry: Arc<Registry<K>>,
    extract: X,
    classifier: C,
}

/// The key function of a [`KeyedCircuitBreakerLayer`] before
/// [`per`](KeyedCircuitBreakerLayer::per) gives one: a service built with it
/// is not a [`Service`](tower_service::Service).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Unkeyed;

impl<K, X: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, X, C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, X, C> fmt::Debug for KeyedCircuitBreakerLayer<K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("config", &self.registry.lock().config)
            .field("max_keys", &self.registry.max_keys.load(Ordering::Relaxed))
            .field("max_open_share", &self.registry.ejection.cap())
            .finish()
    }
}

impl<K> KeyedCircuitBreakerLayer<K> {
    /// A layer giving each key its own breaker with the settings of
    /// `config`; [`per`](Self::per) says how to take the key from a request.
    pub fn new(config: Config) -> Self {
        Self {
            registry: Arc::new(Registry::new(config)),
            extract: Unkeyed,
            classifier: ErrorIsFailure,
        }
    }
}

impl<K, C> KeyedCircuitBreakerLayer<K, Unkeyed, C> {
    /// Takes each request's key with `extract`, such as its downstream host.
    #[must_use]
    pub fn per<Req, X>(self, extract: X) -> KeyedCircuitBreakerLayer<K, X, C>
    where
        X: Fn(&Req) -> K,
    {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            extract,
            classifier: self.classifier,
        }
    }
}

impl<K, X, C> KeyedCircuitBreakerLayer<K, X, C> {
    /// The most keys remembered at once (default
    /// [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS)).
    ///
    /// Applies to the breakers this layer shares with its clones, its
    /// services and its handle; lowered below the keys remembered, the
    /// extra keys are forgotten as new ones arrive.
    #[must_use]
    pub fn max_keys(self, n: NonZeroUsize) -> Self {
        self.registry.max_keys.store(n.get(), Ordering::Relaxed);
        self
    }

    /// The largest share of keys open (or half-open) at once (default:
    /// no cap). Applies to the breakers this layer shares with its clones,
    /// its services and its handle.
    #[must_use]
    pub fn max_open_share(self, share: Rate) -> Self {
        self.registry.ejection.set_cap(share);
        self
    }

    /// Decides with `classifier` what a finished call means; see
    /// [`Classify`](crate::circuit_breaker::Classify). Keeps the breakers.
    #[must_use]
    pub fn classify<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, X, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            extract: self.extract,
            classifier,
        }
    }

    /// The handle of this layer's breakers.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle::new(self.registry.clone())
    }
}

impl<S, K, X: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, X, C> {
    type Service = KeyedCircuitBreaker<S, K, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::from_parts(
            inner,
            self.registry.clone(),
            self.extract.clone(),
            self.classifier.clone(),
        )
    }
}
