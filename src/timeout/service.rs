use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::config::{Config, Fixed, PerRequest, SharedTimeout};
use super::deadline::{DeadlineRequest, add};
use super::observe::Observer;
use super::{Deadline, Error, future::ResponseFuture};

/// Fails a call that the inner service does not answer in time.
///
/// Built by [`TimeoutLayer`](super::TimeoutLayer); `M` is [`Fixed`] (one
/// budget, any request) or [`PerRequest`].
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone)]
pub struct Timeout<S, M = Fixed> {
    inner: S,
    config: Config<M>,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a fixed `timeout`, named
    /// [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME) in metrics and
    /// tracing ([`TimeoutLayer::name`](super::TimeoutLayer::name) sets one).
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self::from_config(
            inner,
            Config {
                timeout: SharedTimeout::new(timeout),
                mode: Fixed,
                observer: Observer::unnamed(),
            },
        )
    }
}

impl<S, M> Timeout<S, M> {
    pub(crate) fn from_config(inner: S, config: Config<M>) -> Self {
        Self { inner, config }
    }

    /// The name of this timeout in metrics and tracing.
    pub fn name(&self) -> &str {
        self.config.observer.name()
    }

    /// The timeout (with [`PerRequest`], the maximum), as its layer's
    /// [`Handle`](super::Handle) last set it.
    pub fn timeout(&self) -> Duration {
        self.config.timeout.get()
    }

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

impl<S, Req> Service<Req> for Timeout<S, Fixed>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Like tower's, the budget bounds the call, not the wait for readiness:
        // put a load shedder or a buffer outside to bound that.
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The budget counts from the call, as tower's does: the inner
        // service may start work here that runs however late the future is
        // first polled. One clock read; the timer is armed only if the inner
        // future is not ready when first polled.
        ResponseFuture::fixed(
            self.inner.call(req),
            crate::clock::Stamp::now(),
            // Read once: a change by the handle applies from the next call.
            self.config.timeout.get(),
            self.config.observer,
        )
    }
}

impl<S, Req> Service<Req> for Timeout<S, PerRequest>
where
    S: Service<Req>,
    Req: DeadlineRequest,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        // Read once: a change by the handle applies from the next call.
        let timeout = self.config.timeout.get();
        let Config {
            ref mode, observer, ..
        } = self.config;
        // A deadline travels with the request, so it counts from the call.
        let now = Instant::now();
        let mut deadline = add(now, timeout);
        let carried = req.deadline();
        if let Some(carried) = carried {
            deadline = if mode.overrides {
                carried.instant()
            } else {
                deadline.min(carried.instant())
            };
        }
        // A gRPC request carries its budget in grpc-timeout, not the HTTP
        // header; one lookup of content-type tells them apart, skipped when
        // no header is read nor written.
        #[cfg(feature = "grpc")]
        let grpc = (mode.read_header || mode.forward_header)
            && req
                .header(&http::header::CONTENT_TYPE)
                .is_some_and(crate::grpc_wire::is_grpc_content_type);
        #[cfg(feature = "grpc")]
        if mode.read_header
            && grpc
            && let Some(value) = req.header(&crate::grpc::GRPC_TIMEOUT)
        {
            match crate::grpc::parse_grpc_timeout(value) {
                // Clamped like the HTTP header: it can only shorten the timeout.
                Ok(budget) => deadline = deadline.min(add(now, budget.min(timeout))),
                // Unlike the HTTP header, gRPC defines the format strictly and
                // its clients send it on every call with a deadline: a
                // malformed one is a broken client, refused so it shows.
                Err(invalid) => {
                    tracing::debug!(
                        layer = "timeout",
                        name = observer.name(),
                        value = invalid.value(),
                        "refusing malformed grpc-timeout"
                    );
                    return ResponseFuture::invalid(invalid.value().to_owned(), observer);
                }
            }
        }
        #[cfg(feature = "grpc")]
        let read_http_header = mode.read_header && !grpc;
        #[cfg(all(feature = "http", not(feature = "grpc")))]
        let read_http_header = mode.read_header;
        #[cfg(feature = "http")]
        if read_http_header && let Some(value) = req.header(&mode.header) {
            match super::parse_budget(value) {
                // Clamped: the header can only shorten the layer's timeout.
                Some(budget) => deadline = deadline.min(add(now, budget.min(timeout))),
                None => tracing::debug!(
                    layer = "timeout",
                    name = observer.name(),
                    header = %mode.header,
                    value = ?value,
                    "ignoring malformed budget header"
                ),
            }
        }
        // Skip the extension write (an allocation for `http::Request`) when
        // the request already carries this deadline, as in a nested stack.
        if carried != Some(Deadline::at(deadline)) {
            req.set_deadline(Deadline::at(deadline));
        }
        let budget = deadline.saturating_duration_since(now);
        #[cfg(feature = "grpc")]
        if mode.forward_header && grpc {
            req.set_header(
                &crate::grpc::GRPC_TIMEOUT,
                crate::grpc::grpc_timeout_value(budget),
            );
        }
        #[cfg(feature = "grpc")]
        let forward_http_header = mode.forward_header && !grpc;
        #[cfg(all(feature = "http", not(feature = "grpc")))]
        let forward_http_header = mode.forward_header;
        #[cfg(feature = "http")]
        if forward_http_header {
            req.set_header(&mode.header, super::http::millis_header(budget));
        }
        if budget.is_zero() {
            // No time left: the answer could not be used, so spare the work.
            return ResponseFuture::expired(deadline, observer);
        }
        ResponseFuture::new(self.inner.call(req), Some(deadline), budget, observer)
    }
}
