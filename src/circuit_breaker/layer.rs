//! The circuit breaker layer.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::breaker::Breaker;
use super::classify::ErrorIsFailure;
use super::config::Config;
use super::handle::Handle;
use super::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`]. Every service this layer builds,
/// and every clone of the layer, shares one breaker.
///
/// [`new`](Self::new) creates the breaker's state once, from a [`Config`]
/// that carries every setting; no method of the layer replaces it, so a
/// [`handle`](Self::handle) taken at any time steers the breaker that every
/// service built from this layer (or a clone) uses, and its
/// [`set_config`](Handle::set_config) replaces the settings of all of them.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = ErrorIsFailure> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.breaker.config())
            .field("state", &self.breaker.state())
            .finish()
    }
}

impl Default for CircuitBreakerLayer {
    /// A layer with [`Config::default`].
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl CircuitBreakerLayer {
    /// A layer whose services share one breaker with the settings of
    /// `config` (see [`Config`] for the defaults).
    pub fn new(config: Config) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: ErrorIsFailure,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Decides with `classifier` what a finished call means (default:
    /// [`ErrorIsFailure`]); see [`Classify`](super::Classify). Keeps the
    /// breaker: handles taken before still steer it.
    #[must_use]
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The handle of the breaker this layer's services share.
    pub fn handle(&self) -> Handle {
        Handle::new(self.breaker.clone())
    }

    /// Shares the breaker with the other instances of the service through
    /// `fleet` (feature `redis`): a trip on one instance opens the others,
    /// and one instance probes for all once the wait is over. Calls are
    /// still decided here, with no round trip; a background task (started
    /// now, or by the first service built on a runtime, and ended when the
    /// breaker's last layer, service and handle are gone) talks to Redis.
    /// The breaker's [`Config::name`] names its keys, so instances that
    /// share a breaker give it the same name.
    ///
    /// A breaker is shared once: a second call (on this layer or a clone)
    /// changes nothing. See the [module docs](super#shared-across-instances).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn shared(self, fleet: super::RedisFleet) -> Self {
        super::fleet::share(&self.breaker, fleet);
        self
    }

    /// The settings in force: those given to [`new`](Self::new), or the
    /// latest a [`Handle::set_config`] gave.
    pub fn config(&self) -> Config {
        self.breaker.config()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        self.breaker.publish_state();
        #[cfg(feature = "redis")]
        super::fleet::start(&self.breaker);
        CircuitBreaker::from_parts(inner, self.breaker.clone(), self.classifier.clone())
    }
}
