//! The layer and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::algorithm::Algorithm;
use super::config::{Config, DEFAULT_RETRY_AFTER, Shared};
use super::handle::Handle;
use super::observe::Observer;
use super::service::AdaptiveConcurrency;
use crate::load_shed::{Queue, Uniform};

/// Applies [`AdaptiveConcurrency`] to services: every service it builds,
/// and every clone of them, shares one limit, moved by one algorithm.
///
/// The limit and its algorithm are made by [`new`](Self::new): a
/// [`handle`](Self::handle) taken at any time reads what the services use.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct AdaptiveConcurrencyLayer<P = Uniform> {
    config: Config<P>,
}

impl AdaptiveConcurrencyLayer {
    /// A layer whose limit `algorithm` moves, starting at its
    /// [`initial_limit`](Algorithm::initial_limit); a request over the limit
    /// is refused at once unless a [`queue`](Self::queue) is set.
    pub fn new<A: Algorithm>(algorithm: A) -> Self {
        Self {
            config: Config {
                priority: Uniform,
                retry_after: DEFAULT_RETRY_AFTER,
                back_pressure: false,
                observer: Observer::unnamed(),
                shared: Shared::new(Box::new(algorithm)),
            },
        }
    }
}

impl<P> AdaptiveConcurrencyLayer<P> {
    /// Sets how a request's [`Priority`](crate::load_shed::Priority) is read
    /// (default: every request `Normal`). See [`crate::load_shed`].
    #[must_use]
    pub fn priority<P2>(self, extractor: P2) -> AdaptiveConcurrencyLayer<P2> {
        let c = self.config;
        AdaptiveConcurrencyLayer {
            config: Config {
                priority: extractor,
                retry_after: c.retry_after,
                back_pressure: c.back_pressure,
                observer: c.observer,
                shared: c.shared,
            },
        }
    }

    /// Lets requests wait for a permit, as `queue` bounds them (default: no
    /// queue, a request over the limit is refused at once). The time a
    /// request waits is not part of the latency the algorithm sees.
    ///
    /// The queue belongs to the limiter `new` created, which every clone of
    /// this layer shares (as its [`handle`](Self::handle) does): setting it
    /// on a clone sets it for all.
    #[must_use]
    pub fn queue(self, queue: Queue) -> Self {
        self.config.shared.gate.set_queue(Some(queue));
        self
    }

    /// Whether `poll_ready` reports saturation (default: off): the service
    /// is then not ready while every permit is taken and the queue (if any)
    /// is full, and is woken when one frees, so a tower `LoadShed` or
    /// `Buffer` above it sees the back-pressure.
    ///
    /// Off by default because a caller that awaits readiness (axum's router,
    /// `ServiceExt::oneshot`) would then wait in `poll_ready` without bound
    /// instead of being refused, and `poll_ready` cannot see a `NeverShed`
    /// priority. Turn it on under a `LoadShed` or a bounded `Buffer`.
    #[must_use]
    pub fn back_pressure(mut self, on: bool) -> Self {
        self.config.back_pressure = on;
        self
    }

    /// The `Retry-After` of a refusal (default [`DEFAULT_RETRY_AFTER`]).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing events
    /// (the `name` field).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.observer = Observer::new(name.into());
        self
    }

    /// The handle of the limit this layer's services share.
    pub fn handle(&self) -> Handle {
        Handle::new(self.config.shared.clone())
    }
}

impl<P> fmt::Debug for AdaptiveConcurrencyLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("name", &c.observer.name())
            .field("limit", &c.shared.gate.limit())
            .field("retry_after", &c.retry_after)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for AdaptiveConcurrencyLayer<P> {
    type Service = AdaptiveConcurrency<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency::new(inner, Arc::new(self.config.clone()))
    }
}
