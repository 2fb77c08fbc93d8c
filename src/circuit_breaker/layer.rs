//! The circuit breaker layer.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::breaker::Breaker;
use super::classify::ErrorIsFailure;
use super::config::{Config, Rate};
use super::handle::Handle;
use super::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`]. Every service this layer builds,
/// and every clone of the layer, shares one breaker.
///
/// The setters replace the breaker: configure first, then take the
/// [`handle`](Self::handle) and build services.
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
            .field("config", &self.breaker.config)
            .field("state", &self.breaker.state())
            .finish()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// A layer with [`Config::default`]: open after 5 consecutive failures,
    /// for 30 s, then one probe.
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    /// A layer with `config`.
    pub fn with_config(config: Config) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: ErrorIsFailure,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(self, $($arg: $ty),*) -> Self {
            let config = self.breaker.config.clone().$name($($arg),*);
            Self { breaker: Arc::new(Breaker::new(config)), classifier: self.classifier }
        }
    )*};
}

impl<C> CircuitBreakerLayer<C> {
    setters! {
        /// See [`Config::consecutive_failures`].
        consecutive_failures(n: NonZeroU32);
        /// See [`Config::count_window`].
        count_window(size: NonZeroU32);
        /// See [`Config::time_window`].
        time_window(length: Duration, buckets: NonZeroU32);
        /// See [`Config::failure_rate`].
        failure_rate(rate: Rate);
        /// See [`Config::minimum_calls`].
        minimum_calls(n: u32);
        /// See [`Config::slow_calls`].
        slow_calls(duration: Duration, rate: Rate);
        /// See [`Config::open_wait`].
        open_wait(wait: Duration);
        /// See [`Config::backoff`].
        backoff(multiplier: f64, max: Duration);
        /// See [`Config::half_open_probes`].
        half_open_probes(n: NonZeroU32);
        /// See [`Config::probe_timeout`].
        probe_timeout(timeout: Duration);
    }

    /// See [`Config::name`].
    #[must_use]
    pub fn name(self, name: impl Into<Arc<str>>) -> Self {
        let config = self.breaker.config.clone().name(name);
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: self.classifier,
        }
    }

    /// Decides with `classifier` what a finished call means (default:
    /// [`ErrorIsFailure`]); see [`Classify`](super::Classify). Keeps the
    /// breaker.
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
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        self.breaker.publish_state();
        CircuitBreaker::from_parts(inner, self.breaker.clone(), self.classifier.clone())
    }
}
