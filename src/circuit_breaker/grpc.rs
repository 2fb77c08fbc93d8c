//! The breaker of a gRPC client or server: calls classified by their
//! `grpc-status`, in the headers or in the trailers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::body::GrpcBody;
use super::breaker::Breaker;
use super::config::Config;
use super::error::Error;
use super::future::GrpcResponseFuture;
use super::handle::Handle;
use super::service::{CircuitBreaker, Start};
use super::state::Outcome;
use crate::grpc_wire::is_grpc;

const GRPC_STATUS: &str = "grpc-status";

// gRPC's status codes used below (0 to 16, google.rpc.Code).
const CANCELLED: u8 = 1;
const UNKNOWN: u8 = 2;
const DEADLINE_EXCEEDED: u8 = 4;
const PERMISSION_DENIED: u8 = 7;
const UNIMPLEMENTED: u8 = 12;
const INTERNAL: u8 = 13;
const UNAVAILABLE: u8 = 14;
const DATA_LOSS: u8 = 15;
const UNAUTHENTICATED: u8 = 16;

fn set(codes: impl IntoIterator<Item = u8>) -> u32 {
    codes
        .into_iter()
        .filter(|&c| c <= 16)
        .fold(0, |set, c| set | 1 << c)
}

/// What a gRPC status means to a breaker: a failure of the server, a call
/// that says nothing of it, or a success.
///
/// By default the failures are the codes the gRPC status guide gives a
/// server or its network that cannot answer: `UNAVAILABLE`, `INTERNAL`,
/// `UNKNOWN`, `DATA_LOSS` and `DEADLINE_EXCEEDED`. `CANCELLED` is ignored:
/// the caller gave up, which says nothing of the server. Every other code is
/// a success: `INVALID_ARGUMENT`, `NOT_FOUND` or `RESOURCE_EXHAUSTED` is a
/// server that answers.
///
/// ```
/// use palisade::circuit_breaker::{GrpcClassifier, Outcome};
///
/// let classifier = GrpcClassifier::new();
/// assert_eq!(classifier.outcome(14), Outcome::Failure); // UNAVAILABLE
/// assert_eq!(classifier.outcome(3), Outcome::Success); // INVALID_ARGUMENT
///
/// // RESOURCE_EXHAUSTED (8) too counts as a failure.
/// let classifier = classifier.failure_codes([14, 13, 2, 15, 4, 8]);
/// assert_eq!(classifier.outcome(8), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    // Bit `n`: code `n` is a failure, is ignored.
    failures: u32,
    ignored: u32,
}

impl GrpcClassifier {
    /// The default classifier (see the type's docs).
    pub fn new() -> Self {
        Self {
            failures: set([UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED]),
            ignored: set([CANCELLED]),
        }
    }

    /// These status codes are the failures instead (gRPC's numbers, 0 to
    /// 16; with tonic, `tonic::Code::Unavailable as u8`). Larger numbers are
    /// left out.
    #[must_use]
    pub fn failure_codes(mut self, codes: impl IntoIterator<Item = u8>) -> Self {
        self.failures = set(codes);
        self
    }

    /// These status codes are ignored instead: neither a success nor a
    /// failure. A code in both lists is a failure.
    #[must_use]
    pub fn ignored_codes(mut self, codes: impl IntoIterator<Item = u8>) -> Self {
        self.ignored = set(codes);
        self
    }

    /// The outcome of a call that ended with status `code`. A code beyond 16
    /// is read as `UNKNOWN`, as gRPC clients read it.
    pub fn outcome(&self, code: u8) -> Outcome {
        let code = if code > 16 { UNKNOWN } else { code };
        if self.failures & (1 << code) != 0 {
            Outcome::Failure
        } else if self.ignored & (1 << code) != 0 {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }

    /// The code of a response whose status is known from its head: its
    /// `grpc-status` header (a trailers-only response), or its HTTP status
    /// when that is not `200` (a proxy's answer, read as gRPC's HTTP mapping
    /// reads it), or `UNKNOWN` for a `200` that is not gRPC. `None`: the
    /// status comes in the trailers.
    pub(crate) fn head_code<B>(response: &Response<B>) -> Option<u8> {
        if let Some(code) = response.headers().get(GRPC_STATUS) {
            return Some(parse_code(code.as_bytes()));
        }
        match response.status() {
            StatusCode::OK if is_grpc(response.headers()) => None,
            StatusCode::OK => Some(UNKNOWN),
            // doc/http-grpc-status-mapping.md
            StatusCode::BAD_REQUEST => Some(INTERNAL),
            StatusCode::UNAUTHORIZED => Some(UNAUTHENTICATED),
            StatusCode::FORBIDDEN => Some(PERMISSION_DENIED),
            StatusCode::NOT_FOUND => Some(UNIMPLEMENTED),
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Some(UNAVAILABLE),
            _ => Some(UNKNOWN),
        }
    }

    /// The code in a full response's trailers; `INTERNAL` when they carry
    /// none, as a gRPC client reads a call that ends without a status.
    pub(crate) fn trailers_code(trailers: &HeaderMap) -> u8 {
        trailers
            .get(GRPC_STATUS)
            .map_or(INTERNAL, |code| parse_code(code.as_bytes()))
    }

    /// The code of a call whose body ended without trailers or failed.
    pub(crate) const BROKEN: u8 = INTERNAL;
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

/// A `grpc-status` value: ASCII digits, or `UNKNOWN` if it is not one.
fn parse_code(value: &[u8]) -> u8 {
    match value {
        [d @ b'0'..=b'9'] => d - b'0',
        [b'1', d @ b'0'..=b'6'] => 10 + (d - b'0'),
        _ => UNKNOWN,
    }
}

/// Wraps services in a [`GrpcCircuitBreaker`]: a circuit breaker that counts
/// a call by its gRPC status. Every service this layer builds, and every
/// clone of the layer, shares one breaker.
///
/// Every gRPC answer is an HTTP `200`, so the plain
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer), which classifies the
/// response as it arrives, cannot see a status that comes at the end of the
/// body. This layer reads `grpc-status` where it is:
///
/// - in the headers of a trailers-only response (a call refused or failed
///   before any message: what `tonic::Status::into_http()` builds), the
///   call is counted when the response arrives;
/// - otherwise the call is counted when its body ends, by the status in its
///   trailers (a body that fails or ends without one is `INTERNAL`). A body
///   dropped before its end is not counted, and a half-open probe's permit is
///   given back, as for a response future dropped unfinished. A slow call is
///   timed to the end of its body.
///
/// A response that is not gRPC is read as gRPC's HTTP mapping reads it
/// (`502`, `503`, `504` and `429` are `UNAVAILABLE`; a `200` that is not
/// gRPC is `UNKNOWN`, a failure, as a gRPC client sees it): put this layer
/// around gRPC calls only, not around routes that also answer plain HTTP
/// or gRPC-Web. An `Err` from the inner
/// service (a tonic `Channel` that cannot connect) is a failure. What each
/// code means is up to a [`GrpcClassifier`].
///
/// It serves a tonic client (around a `Channel`) and a tonic server
/// (`Server::builder().layer(..)`) alike; an open breaker fails fast with
/// [`Error::Open`], which a [`ProblemLayer`](crate::problem::ProblemLayer)
/// above it answers with `UNAVAILABLE` and the wait as
/// `grpc-retry-pushback-ms`.
///
/// ```
/// use std::num::NonZeroU32;
/// use http::{Request, Response};
/// use palisade::circuit_breaker::{Config, GrpcCircuitBreakerLayer, State};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = GrpcCircuitBreakerLayer::new(
///     Config::new().consecutive_failures(NonZeroU32::new(1).unwrap()),
/// );
/// let handle = layer.handle();
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
///     // A trailers-only UNAVAILABLE, as a gRPC server sends it.
///     Ok::<_, std::convert::Infallible>(
///         Response::builder()
///             .header("content-type", "application/grpc")
///             .header("grpc-status", "14")
///             .body(http_body_util::Empty::<bytes::Bytes>::new())
///             .unwrap(),
///     )
/// }));
/// svc.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(handle.state(), State::Open);
/// # }
/// ```
#[derive(Clone)]
pub struct GrpcCircuitBreakerLayer {
    breaker: Arc<Breaker>,
    classifier: GrpcClassifier,
}

impl fmt::Debug for GrpcCircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCircuitBreakerLayer")
            .field("config", &self.breaker.config())
            .field("classifier", &self.classifier)
            .field("state", &self.breaker.state())
            .finish()
    }
}

impl Default for GrpcCircuitBreakerLayer {
    /// A layer with [`Config::default`].
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl GrpcCircuitBreakerLayer {
    /// A layer whose services share one breaker with the settings of
    /// `config`, classifying calls with [`GrpcClassifier::new`].
    pub fn new(config: Config) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: GrpcClassifier::new(),
        }
    }

    /// Decides with `classifier` what each status means. Keeps the breaker:
    /// handles taken before still steer it.
    #[must_use]
    pub fn classify(mut self, classifier: GrpcClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The handle of the breaker this layer's services share.
    pub fn handle(&self) -> Handle {
        Handle::new(self.breaker.clone())
    }

    /// Shares the breaker with the other instances of the service through
    /// `fleet` (feature `redis`), as
    /// [`CircuitBreakerLayer::shared`](super::CircuitBreakerLayer::shared)
    /// does.
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

impl<S> Layer<S> for GrpcCircuitBreakerLayer {
    type Service = GrpcCircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.breaker.publish_state();
        #[cfg(feature = "redis")]
        super::fleet::start(&self.breaker);
        GrpcCircuitBreaker {
            breaker: CircuitBreaker::from_parts(inner, self.breaker.clone(), self.classifier),
        }
    }
}

/// A circuit breaker that counts a gRPC call by its status, in the headers
/// or in the trailers; built by [`GrpcCircuitBreakerLayer`], whose docs say
/// how. Its response body is a [`GrpcBody`], which records the call when it
/// ends.
pub struct GrpcCircuitBreaker<S> {
    breaker: CircuitBreaker<S, GrpcClassifier>,
}

impl<S> GrpcCircuitBreaker<S> {
    /// The handle of the breaker.
    pub fn handle(&self) -> Handle {
        self.breaker.handle()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.breaker.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.breaker.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.breaker.into_inner()
    }
}

impl<S: Clone> Clone for GrpcCircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for GrpcCircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCircuitBreaker")
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcCircuitBreaker<S>
where
    S: Service<http::Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<GrpcBody<ResBody>>;
    type Error = Error<S::Error>;
    type Future = GrpcResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.breaker.poll_admit::<http::Request<ReqBody>>(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        match self.breaker.start() {
            Start::Tracked(record) => {
                GrpcResponseFuture::tracked(self.breaker.get_mut().call(req), record)
            }
            Start::Passed => GrpcResponseFuture::passthrough(self.breaker.get_mut().call(req)),
            Start::Rejected(retry_after) => GrpcResponseFuture::rejected(retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_value_parses_to_a_code() {
        for code in 0u8..=16 {
            assert_eq!(parse_code(code.to_string().as_bytes()), code);
        }
        for bad in [
            &b""[..],
            b"17",
            b"99",
            b"-1",
            b"01",
            b" 1",
            b"1 ",
            b"abc",
            b"140",
        ] {
            assert_eq!(parse_code(bad), UNKNOWN, "{bad:?}");
        }
    }

    #[test]
    fn default_outcomes() {
        let c = GrpcClassifier::new();
        for failure in [
            UNAVAILABLE,
            INTERNAL,
            UNKNOWN,
            DATA_LOSS,
            DEADLINE_EXCEEDED,
            17,
            255,
        ] {
            assert_eq!(c.outcome(failure), Outcome::Failure, "{failure}");
        }
        assert_eq!(c.outcome(CANCELLED), Outcome::Ignored);
        for success in [0, 3, 5, 6, 7, 8, 9, 10, 11, 12, 16] {
            assert_eq!(c.outcome(success), Outcome::Success, "{success}");
        }
        // A code in both lists is a failure.
        let both = c.ignored_codes([UNAVAILABLE]);
        assert_eq!(both.outcome(UNAVAILABLE), Outcome::Failure);
        assert_eq!(both.outcome(CANCELLED), Outcome::Success);
    }
}
