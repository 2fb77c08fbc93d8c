//! The timeout layer.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;
use super::config::{Config, EXTERNAL_TIMEOUT, Fixed, INTERNAL_TIMEOUT, PerRequest, SharedTimeout};
use super::handle::Handle;
use super::observe::Observer;

/// Bounds the time the inner service takes to answer.
///
/// `TimeoutLayer::new` applies one budget to every request and works for any
/// request type; [`per_request`](TimeoutLayer::per_request) also honours a
/// [`Deadline`](super::Deadline) carried by the request (and, with feature
/// `http`, a `REQUEST_TIMEOUT` header).
///
/// The timeout is created once, by [`new`](Self::new), and shared by the
/// layer's clones, the services they build and every
/// [`handle`](Self::handle), which changes it at run time.
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone)]
pub struct TimeoutLayer<M = Fixed> {
    config: Config<M>,
}

impl TimeoutLayer {
    /// A layer that fails a call with [`Error::Elapsed`](super::Error::Elapsed)
    /// when the inner service has not answered within `timeout`, counted
    /// from the call.
    ///
    /// A timeout longer than `u64::MAX` nanoseconds (about 584 years, such
    /// as [`Duration::MAX`]) is kept as that; a deadline is never set more
    /// than about thirty years out anyway.
    pub fn new(timeout: Duration) -> Self {
        Self {
            config: Config {
                timeout: SharedTimeout::new(timeout),
                mode: Fixed,
                observer: Observer::unnamed(),
            },
        }
    }

    /// A layer with [`INTERNAL_TIMEOUT`] (3 s): for calls to services you run
    /// on the same network.
    pub fn internal() -> Self {
        Self::new(INTERNAL_TIMEOUT)
    }

    /// A layer with [`EXTERNAL_TIMEOUT`] (10 s): for calls to third-party
    /// services over the internet, and for a server's own requests.
    pub fn external() -> Self {
        Self::new(EXTERNAL_TIMEOUT)
    }

    /// Honours a per-request budget, with this layer's timeout as the maximum.
    ///
    /// Per call, the deadline is the earliest of: the layer's timeout from
    /// the call; the [`Deadline`](super::Deadline) the request carries; with
    /// feature `http`, the `REQUEST_TIMEOUT` header
    /// (clamped to the layer's timeout, so a caller can only shorten it; a
    /// malformed value is ignored). The deadline applied is stored back in the
    /// request, so services further in see what is left. A request whose
    /// deadline has already passed fails at once without calling the inner
    /// service.
    ///
    /// The request type must implement
    /// [`DeadlineRequest`](super::DeadlineRequest), as `http::Request` does.
    pub fn per_request(self) -> TimeoutLayer<PerRequest> {
        TimeoutLayer {
            config: Config {
                timeout: self.config.timeout,
                mode: PerRequest::new(),
                observer: self.config.observer,
            },
        }
    }
}

impl<M> TimeoutLayer<M> {
    /// The layer's timeout: the budget of every call, or with
    /// [`per_request`](TimeoutLayer::per_request) the maximum.
    pub fn timeout(&self) -> Duration {
        self.config.timeout.get()
    }

    /// The handle that reads and changes this layer's timeout at run time,
    /// for the services it built and will build, and for its clones.
    /// See [`Handle`].
    pub fn handle(&self) -> Handle {
        Handle::new(self.config.timeout.clone())
    }

    /// Names this timeout in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the dependency it guards; the
    /// default is [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME).
    /// See [`crate::observability`]. Each distinct name is kept for the life
    /// of the process (as a metrics recorder keeps its series): take names
    /// from configuration, never from requests.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.observer = Observer::named(name.into());
        self
    }
}

impl TimeoutLayer<PerRequest> {
    /// Whether a [`Deadline`](super::Deadline) in the request replaces the
    /// layer's timeout even when it is later (default `false`: the deadline
    /// can only shorten it).
    ///
    /// Turn it on only where the deadline comes from a layer you trust
    /// further out. The header budget is still clamped to the layer's
    /// timeout.
    #[must_use]
    pub fn override_timeout(mut self, on: bool) -> Self {
        self.config.mode.overrides = on;
        self
    }

    /// The header that carries the budget, read and forwarded (default
    /// [`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT)).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn header(mut self, name: http::HeaderName) -> Self {
        self.config.mode.header = name;
        self
    }

    /// Whether the budget header of an incoming request shortens the
    /// timeout (default `true`). Turn it off where callers are not trusted
    /// to set the budget, or on a client stack: only a
    /// [`Deadline`](super::Deadline) in the request then shortens it.
    ///
    /// With feature `grpc`, a gRPC request's budget header is
    /// [`GRPC_TIMEOUT`](crate::grpc::GRPC_TIMEOUT) instead, and a malformed
    /// one is refused with [`Error::InvalidBudget`](super::Error::InvalidBudget)
    /// (a malformed HTTP budget header is ignored).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn read_header(mut self, on: bool) -> Self {
        self.config.mode.read_header = on;
        self
    }

    /// Whether the budget applied to each request is written into its
    /// budget [`header`](Self::header), in whole milliseconds rounded down
    /// (default `false`). On a client stack, this forwards the smaller of the
    /// layer's timeout and the time left to the next service.
    ///
    /// With feature `grpc`, a gRPC request gets it as
    /// [`GRPC_TIMEOUT`](crate::grpc::GRPC_TIMEOUT) instead
    /// ([`grpc_timeout_value`](crate::grpc::grpc_timeout_value)).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn forward_header(mut self, on: bool) -> Self {
        self.config.mode.forward_header = on;
        self
    }
}

impl<S, M: Clone> Layer<S> for TimeoutLayer<M> {
    type Service = Timeout<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_config(inner, self.config.clone())
    }
}
