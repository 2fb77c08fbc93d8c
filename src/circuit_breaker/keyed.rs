//! One breaker per key, such as per downstream host.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::breaker::{Admit, Breaker, Ejection};
use super::classify::{Classify, ErrorIsFailure};
use super::config::{Config, Rate};
use super::error::Error;
use super::future::{Record, ResponseFuture, call_ticket, probe_ticket};
use super::handle::Handle;
use super::observe::Observer;
use crate::observability::{RedactedKey, redact_hashable};

/// The default of [`KeyedCircuitBreakerLayer::max_keys`]: 1,024 keys.
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

/// A key for logs: its digest, never the key itself (for a string key, the
/// same digest as `redact_key` gives).
fn redact<K: Hash>(key: &K) -> RedactedKey {
    redact_hashable(key)
}

struct Entry {
    breaker: Arc<Breaker>,
    last_used: u64,
}

struct Map<K> {
    entries: HashMap<K, Entry>,
    tick: u64,
}

struct Registry<K> {
    config: Config,
    observer: Arc<Observer>,
    // An atomic, so the layer's setter changes it in place.
    max_keys: AtomicUsize,
    ejection: Arc<Ejection>,
    map: Mutex<Map<K>>,
}

impl<K> Registry<K> {
    fn new(config: Config) -> Self {
        Self {
            observer: Observer::new(config.name.clone()),
            config,
            max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS.get()),
            ejection: Arc::new(Ejection::new()),
            map: Mutex::new(Map {
                entries: HashMap::new(),
                tick: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map<K>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    fn breaker(&self, key: K) -> Arc<Breaker> {
        let mut map = self.lock();
        map.tick += 1;
        let tick = map.tick;
        if let Some(entry) = map.entries.get_mut(&key) {
            entry.last_used = tick;
            return entry.breaker.clone();
        }
        // A loop: `max_keys` may have been lowered since the last key came.
        while map.entries.len() >= self.max_keys.load(Ordering::Relaxed) {
            // Forget the least recently used key, closed ones first: an open
            // breaker forgotten would let traffic back to a failing host.
            let victim = map
                .entries
                .iter()
                .min_by_key(|(_, entry)| (entry.breaker.is_ejected(), entry.last_used))
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else { break };
            if let Some(entry) = map.entries.remove(&victim) {
                entry.breaker.detach();
                self.ejection.keys.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(
                    layer = "circuit_breaker",
                    name = self.observer.name(),
                    key = %redact(&victim),
                    "keyed circuit breaker forgot a key"
                );
            }
        }
        let breaker = Arc::new(Breaker::with_ejection(
            self.config.clone(),
            self.observer.clone(),
            Some(redact(&key)),
            Some(self.ejection.clone()),
        ));
        breaker.publish_state();
        self.ejection.keys.fetch_add(1, Ordering::AcqRel);
        map.entries.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: tick,
            },
        );
        breaker
    }
}

/// Keeps one circuit breaker per key, the key taken from each request by a
/// function given to [`per`](Self::per) (`Fn(&Req) -> K`), such as the
/// downstream host of a client request.
///
/// [`new`](Self::new) creates the breakers' registry once; no method of the
/// layer replaces it, so a [`handle`](Self::handle) taken at any time sees
/// the breakers of every service built from this layer and its clones.
///
/// Memory is bounded: past [`max_keys`](Self::max_keys) (default
/// [`DEFAULT_MAX_KEYS`]) the least recently used key is forgotten, closed
/// keys first. An optional [`max_open_share`](Self::max_open_share) caps the
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
/// is not a [`Service`].
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
            .field("config", &self.registry.config)
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
    /// The most keys remembered at once (default [`DEFAULT_MAX_KEYS`]).
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
    /// [`Classify`]. Keeps the breakers.
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
        KeyedHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<S, K, X: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, X, C> {
    type Service = KeyedCircuitBreaker<S, K, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service of [`KeyedCircuitBreakerLayer`].
///
/// The key is known only in `call`, so `poll_ready` waits for the inner
/// service; `call` fails fast with [`Error::Open`] when the key's breaker is
/// open.
pub struct KeyedCircuitBreaker<S, K, X, C = ErrorIsFailure> {
    inner: S,
    registry: Arc<Registry<K>>,
    extract: X,
    classifier: C,
}

impl<S, K, X, C> KeyedCircuitBreaker<S, K, X, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, X: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, X, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for KeyedCircuitBreaker<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, X, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, X, C>
where
    S: Service<Req>,
    K: Hash + Eq + Clone + fmt::Debug,
    X: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker((self.extract)(&req));
        let ticket = match breaker.admit() {
            Admit::Call(generation) => call_ticket(generation),
            Admit::Probe(id) => probe_ticket(id),
            Admit::Pass => {
                breaker.on_passed();
                return ResponseFuture::passthrough(self.inner.call(req));
            }
            Admit::Reject(retry_after) => {
                breaker.on_rejected(retry_after);
                return ResponseFuture::rejected(retry_after);
            }
        };
        let record = Record::new(breaker, self.classifier.clone(), ticket);
        ResponseFuture::tracked(self.inner.call(req), record)
    }
}

/// Reads and steers the breakers of a [`KeyedCircuitBreakerLayer`].
pub struct KeyedHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> KeyedHandle<K> {
    /// The handle of `key`'s breaker, if the key is remembered.
    pub fn get(&self, key: &K) -> Option<Handle> {
        let map = self.registry.lock();
        map.entries
            .get(key)
            .map(|entry| Handle::new(entry.breaker.clone()))
    }

    /// The number of keys remembered.
    pub fn len(&self) -> usize {
        self.registry.lock().entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of keys open or half-open right now.
    pub fn open_keys(&self) -> usize {
        self.registry.ejection.open.load(Ordering::Acquire)
    }
}
