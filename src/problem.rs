//! RFC 9457 problem details (`application/problem+json`).
//!
//! Every palisade error that reaches an HTTP client becomes a [`Problem`]: a
//! JSON object with `type`, `title`, `status`, optional `detail` and
//! `instance`, and extension members such as `errors`. Layers build their
//! problems here so no layer hand-writes error JSON.
//!
//! ```
//! use http::StatusCode;
//! use palisade::problem::Problem;
//!
//! let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
//!     .with_detail("rate limit exceeded")
//!     .with_header(http::header::RETRY_AFTER, http::HeaderValue::from_static("3"));
//! let response = problem.into_response::<http_body_util::Full<bytes::Bytes>>();
//! assert_eq!(response.status(), 429);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! assert_eq!(response.headers()["retry-after"], "3");
//! ```
//!
//! Errors of a server-side stack turn into responses with [`ProblemLayer`],
//! which answers every error that implements [`IntoProblem`] with its problem.
//!
//! # gRPC
//!
//! With feature `grpc`, [`ProblemLayer`] answers a gRPC request (see
//! [`grpc::is_grpc`](crate::grpc::is_grpc)) in gRPC's wire format instead: a
//! trailers-only response ([`grpc::into_response`](crate::grpc::into_response))
//! whose `grpc-status` a tonic client reads as its `Status`. One stack serves
//! HTTP and gRPC callers alike; see [`ProblemLayer`] for an example.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use serde::Serialize;
use serde_json::{Map, Value};
use tower_layer::Layer;
use tower_service::Service;

/// The media type of a problem details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `type` of a problem that has no more specific type than its status
/// (RFC 9457, section 4.2.1).
pub const ABOUT_BLANK: &str = "about:blank";

/// Whole seconds for a `Retry-After` header: rounded up, so a client that
/// waits the value never comes back early, and at least 1, since `0` invites
/// an immediate retry.
///
/// ```
/// use std::time::Duration;
/// use palisade::problem::retry_after_seconds;
///
/// assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
/// assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
/// ```
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    let whole = retry_after.as_secs();
    whole
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
        .max(1)
}

/// The `type` URIs of every problem palisade answers with, one per kind of
/// failure, shared by all layers: a client can branch on `type` without
/// knowing which layer refused it. Each URI is the documentation page of its
/// constant.
pub mod types {
    macro_rules! problem_types {
        ($($(#[$doc:meta])* $name:ident => $title:literal,)*) => {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\nTitle: \"", $title, "\".")]
                pub const $name: &str = concat!(
                    "https://docs.rs/palisade/latest/palisade/problem/types/constant.",
                    stringify!($name),
                    ".html"
                );
            )*

            /// The title of a problem type of this module, `None` for any
            /// other URI. [`Problem::with_type`](super::Problem::with_type)
            /// sets it, so every occurrence of a type has the same title, as
            /// RFC 9457 asks.
            pub fn title(type_uri: &str) -> Option<&'static str> {
                match type_uri {
                    $($name => Some($title),)*
                    _ => None,
                }
            }
        };
    }

    problem_types! {
        /// `429`: the caller spent its quota (rate limit); `Retry-After` says when to come back.
        RATE_LIMITED => "Rate limited",
        /// `429`: one request costs more than the quota ever allows (rate limit).
        COST_TOO_HIGH => "Request costs too much",
        /// `400`: no caller key could be taken from the request (rate limit,
        /// idempotency scope).
        MISSING_CALLER_KEY => "Caller key missing",
        /// `503`: the layer's store failed or did not answer in time and the
        /// layer fails closed; `Retry-After` is set.
        STORE_UNAVAILABLE => "Store unavailable",
        /// `503`: the circuit breaker is open; `Retry-After` says when it probes again.
        CIRCUIT_OPEN => "Circuit open",
        /// `504`: the request's time budget ran out (timeout).
        TIMED_OUT => "Timed out",
        /// `400`: the request's time budget header is malformed (timeout: a
        /// `grpc-timeout` that breaks the gRPC wire format).
        INVALID_TIMEOUT => "Invalid timeout",
        /// `413`: the request body is larger than the layer's body limit.
        BODY_TOO_LARGE => "Request body too large",
        /// `400`: the request body could not be read (the client hung up or sent a broken body).
        BODY_READ_FAILED => "Request body unreadable",
        /// `400`: a required header is missing or invalid (validation).
        INVALID_HEADERS => "Invalid headers",
        /// `415`: the request's `Content-Type` is not one the route accepts (validation).
        UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
        /// `406`: the route cannot answer in any media type the `Accept` header allows (validation).
        NOT_ACCEPTABLE => "Not acceptable",
        /// `400`: the body is not well-formed JSON (validation).
        MALFORMED_JSON => "Malformed JSON",
        /// `400`: a JSON object repeats a member name, so its meaning is ambiguous.
        DUPLICATE_MEMBER => "Duplicate JSON member",
        /// `422`: the body is well-formed but some values break the route's rules (validation);
        /// `errors` lists them with JSON pointers.
        VALIDATION_FAILED => "Validation failed",
        /// `400`: the method requires an `Idempotency-Key` and the request has none.
        MISSING_IDEMPOTENCY_KEY => "Idempotency-Key required",
        /// `400`: the `Idempotency-Key` is not 1 to 255 visible ASCII characters.
        INVALID_IDEMPOTENCY_KEY => "Invalid Idempotency-Key",
        /// `409`: a request with this `Idempotency-Key` is still running; retry after `Retry-After`.
        IN_FLIGHT => "Request in flight",
        /// `422`: the `Idempotency-Key` was used before with a different request.
        KEY_REUSED => "Idempotency-Key reused",
        /// `410`: the request with this `Idempotency-Key` ran, but its response was not kept;
        /// it will not run again.
        NOT_RETAINED => "Response not retained",
        /// `503`: the service is saturated and refused the request rather than
        /// queue it past its wait (bulkhead, adaptive concurrency); `Retry-After`
        /// says when to come back.
        OVERLOADED => "Overloaded",
        /// `500`: the server failed in a way the client cannot fix (a handler
        /// panicked, a route misses its layer).
        INTERNAL => "Internal error",
    }
}

/// An RFC 9457 problem details object, with the response headers that go with
/// it (such as `Retry-After`).
///
/// See the [module docs](self) for an example.
#[derive(Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: String,
    title: String,
    #[serde(serialize_with = "serialize_status")]
    status: StatusCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(flatten)]
    extensions: Map<String, Value>,
    #[serde(skip)]
    headers: HeaderMap,
    // The exact wait behind `Retry-After`, which rounds it up to seconds: a
    // gRPC answer carries it in milliseconds.
    #[serde(skip)]
    retry_after: Option<Duration>,
}

// The `http` crate keeps the phrases RFC 9110 renamed; RFC 9457 asks for the
// current ones.
fn reason_phrase(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "Content Too Large",
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable Content",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

// The members RFC 9457 defines; an extension may not shadow them.
const RESERVED_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

impl Problem {
    /// A problem of type `about:blank` whose title is the status's reason
    /// phrase in RFC 9110, as RFC 9457 asks for that type.
    pub fn new(status: StatusCode) -> Self {
        Self {
            type_uri: ABOUT_BLANK.to_owned(),
            title: reason_phrase(status).to_owned(),
            status,
            detail: None,
            instance: None,
            extensions: Map::new(),
            headers: HeaderMap::new(),
            retry_after: None,
        }
    }

    /// Sets the `type` URI reference that identifies the kind of problem.
    /// A type of [`types`] also sets its title ([`types::title`]); set
    /// another with [`with_title`](Self::with_title) after this.
    #[must_use]
    pub fn with_type(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = type_uri.into();
        if let Some(title) = types::title(&self.type_uri) {
            title.clone_into(&mut self.title);
        }
        self
    }

    /// Sets the short, human-readable `title` of the problem type.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the `detail`: an explanation specific to this occurrence.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the `instance` URI reference of this occurrence.
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Adds an extension member, such as `errors` or `retry_after`.
    ///
    /// # Panics
    ///
    /// If `name` is one of the members RFC 9457 defines (`type`, `title`,
    /// `status`, `detail`, `instance`): use their setters instead.
    #[must_use]
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        assert!(
            !RESERVED_MEMBERS.contains(&name.as_str()),
            "`{name}` is a standard problem member, not an extension"
        );
        self.extensions.insert(name, value.into());
        self
    }

    /// Adds a response header sent with the problem, such as `Retry-After`.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets `Retry-After` in whole seconds ([`retry_after_seconds`]: rounded
    /// up, at least 1) and the same number as the `retry_after` extension
    /// member, so clients that read only the body see it too.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        let seconds = retry_after_seconds(retry_after);
        self.retry_after = Some(retry_after);
        self.with_extension("retry_after", seconds)
            .with_header(http::header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// The wait set by [`with_retry_after`](Self::with_retry_after), exact
    /// (the header rounds it up to whole seconds).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI reference.
    pub fn type_uri(&self) -> &str {
        &self.type_uri
    }

    /// The `title`.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The `detail`, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The `instance`, if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// An extension member, if present.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    /// The response headers sent with the problem.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        // A map of strings, numbers and JSON values cannot fail to serialise.
        Bytes::from(serde_json::to_vec(self).expect("problem serialises to JSON"))
    }

    /// Builds the response: status, headers, `Content-Type:
    /// application/problem+json` and the JSON body.
    pub fn into_response<B: FromBytes>(self) -> Response<B> {
        let body = self.to_json();
        let mut response = Response::new(B::from_bytes(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.extend(self.headers);
        response
    }
}

impl fmt::Debug for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("type", &self.type_uri)
            .field("title", &self.title)
            .field("status", &self.status.as_u16())
            .field("detail", &self.detail)
            .field("instance", &self.instance)
            .field("extensions", &self.extensions)
            .field("headers", &self.headers)
            .finish()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for Problem {
    fn into_response(self) -> axum_core::response::Response {
        Problem::into_response(self)
    }
}

/// A body palisade builds from bytes: a problem's JSON, a request body it
/// read whole and hands on (idempotency).
///
/// It stands where `From<Bytes>` would, because a body such as tonic's has no
/// `From<Bytes>` and a blanket impl over `From<Bytes>` would forbid an impl
/// for it. Implement it for your own body type.
///
/// ```
/// use bytes::Bytes;
/// use palisade::problem::FromBytes;
///
/// struct MyBody(Bytes);
///
/// impl FromBytes for MyBody {
///     fn from_bytes(bytes: Bytes) -> Self {
///         MyBody(bytes)
///     }
/// }
/// ```
pub trait FromBytes {
    /// The body holding exactly `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

impl FromBytes for Bytes {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes
    }
}

impl FromBytes for Vec<u8> {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes.into()
    }
}

impl FromBytes for http_body_util::Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl<E: 'static> FromBytes for http_body_util::combinators::BoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed()
    }
}

impl<E: 'static> FromBytes for http_body_util::combinators::UnsyncBoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl FromBytes for axum_core::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::from(bytes)
    }
}

#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
impl FromBytes for tonic::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        // An empty body (a trailers-only answer) needs no box.
        if bytes.is_empty() {
            Self::empty()
        } else {
            Self::new(http_body_util::Full::new(bytes))
        }
    }
}

/// An error that can answer an HTTP client as a [`Problem`].
///
/// Every palisade error implements it when its inner error does;
/// [`Infallible`] does, so the errors of a stack around an axum handler do.
pub trait IntoProblem {
    /// The problem this error answers with.
    fn into_problem(self) -> Problem;
}

impl IntoProblem for Problem {
    fn into_problem(self) -> Problem {
        self
    }
}

impl IntoProblem for Infallible {
    fn into_problem(self) -> Problem {
        match self {}
    }
}

/// Turns the errors of the service it wraps into problem responses.
///
/// Put it outermost in a server-side stack: a rejection of any palisade layer
/// inside it (or any error that implements [`IntoProblem`]) becomes the
/// matching `application/problem+json` response, and the service's error type
/// becomes [`Infallible`], as axum asks of a route.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use palisade::problem::{Problem, ProblemLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new().layer(ProblemLayer::new()).service(service_fn(
///     |_req: Request<()>| async { Err::<Response<Full<Bytes>>, _>(Problem::new(StatusCode::BAD_GATEWAY)) },
/// ));
/// let response = svc.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
/// # }
/// ```
///
/// # gRPC
///
/// With feature `grpc`, the answer is chosen per request: a gRPC request
/// (`content-type: application/grpc`, see
/// [`grpc::is_grpc`](crate::grpc::is_grpc)) gets a trailers-only response,
/// HTTP `200` with an empty body, `grpc-status` ([`grpc::code_of`](crate::grpc::code_of)),
/// `grpc-message`, `grpc-status-details-bin` and `grpc-retry-pushback-ms`
/// ([`grpc::into_response`](crate::grpc::into_response)); any other request
/// gets problem+json. It wraps a tonic server's routes
/// (`Server::builder().layer(..)`): [`FromBytes`] is implemented for
/// `tonic::body::Body`.
///
/// ```
/// # #[cfg(feature = "grpc")] {
/// use std::time::Duration;
/// use http::{Request, Response, StatusCode};
/// use palisade::problem::{Problem, ProblemLayer, types};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new().layer(ProblemLayer::new()).service(service_fn(
///     |_req: Request<tonic::body::Body>| async {
///         Err::<Response<tonic::body::Body>, _>(
///             Problem::new(StatusCode::TOO_MANY_REQUESTS)
///                 .with_type(types::RATE_LIMITED)
///                 .with_retry_after(Duration::from_secs(2)),
///         )
///     },
/// ));
/// let request = Request::builder()
///     .header("content-type", "application/grpc")
///     .body(tonic::body::Body::empty())
///     .unwrap();
/// let response = svc.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// let status = tonic::Status::from_header_map(response.headers()).unwrap();
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(response.headers()["grpc-retry-pushback-ms"], "2000");
/// # }
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemLayer {
    _priv: (),
}

impl ProblemLayer {
    /// Creates the layer.
    pub fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for ProblemLayer {
    type Service = ProblemResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemResponse::new(inner)
    }
}

/// The service of [`ProblemLayer`]: answers errors with problem responses.
///
/// An inner service that fails `poll_ready` is broken for good (tower's
/// contract): this service then reports ready and answers every call with
/// that error's problem, and never calls the inner service again.
#[derive(Debug)]
pub struct ProblemResponse<S> {
    inner: S,
    failed: Option<Problem>,
}

// A clone starts unready and unfailed, as tower asks of every clone.
impl<S: Clone> Clone for ProblemResponse<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S> ProblemResponse<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failed: None,
        }
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

impl<S, ReqB, B> Service<Request<ReqB>> for ProblemResponse<S>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    S::Error: IntoProblem,
    B: FromBytes,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ProblemFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            // Broken for good: kept, and answered on every call, so the
            // inner service is never called unready.
            Poll::Ready(Err(error)) => {
                self.failed = Some(error.into_problem());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Read now: the request is gone by the time an error comes back.
        let grpc = is_grpc(req.headers());
        let kind = match &self.failed {
            Some(problem) => Kind::Failed {
                problem: Some(problem.clone()),
            },
            None => Kind::Inner {
                future: self.inner.call(req),
            },
        };
        ProblemFuture { kind, grpc }
    }
}

// One header lookup, no allocation; never gRPC without the feature.
#[inline]
fn is_grpc(headers: &HeaderMap) -> bool {
    cfg!(feature = "grpc") && crate::grpc_wire::is_grpc(headers)
}

// A problem in the form the caller reads: trailers-only gRPC or problem+json.
fn render<B: FromBytes>(problem: Problem, grpc: bool) -> Response<B> {
    #[cfg(feature = "grpc")]
    if grpc {
        return crate::grpc::into_response(&problem);
    }
    #[cfg(not(feature = "grpc"))]
    let _ = grpc;
    problem.into_response()
}

pin_project! {
    /// Response future of [`ProblemResponse`].
    #[derive(Debug)]
    pub struct ProblemFuture<F> {
        #[pin]
        kind: Kind<F>,
        // The request was gRPC: answer in its wire format.
        grpc: bool,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Failed { problem: Option<Problem> },
    }
}

impl<F, B, E> Future for ProblemFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: IntoProblem,
    B: FromBytes,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        Poll::Ready(Ok(match this.kind.project() {
            KindProj::Inner { future } => match ready!(future.poll(cx)) {
                Ok(response) => response,
                Err(error) => render(error.into_problem(), grpc),
            },
            KindProj::Failed { problem } => render(
                problem.take().expect("future polled after completion"),
                grpc,
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;
    use serde_json::json;

    #[tokio::test]
    async fn a_readiness_failure_is_answered_and_the_broken_service_never_called() {
        use tower::ServiceExt;
        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<Bytes>>();
        handle.send_error(Problem::new(StatusCode::BAD_GATEWAY).with_detail("pool closed"));
        let mut svc = ProblemResponse::new(
            mock.map_err(|e| *e.downcast::<Problem>().expect("the problem sent")),
        );
        for _ in 0..2 {
            let response = svc
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        }
        // The mock panics when called unready; it saw no request.
        handle.allow(1);
        assert!(handle.poll_request().is_pending());
    }

    #[cfg(feature = "grpc")]
    mod grpc {
        use super::*;
        use crate::grpc::GRPC_RETRY_PUSHBACK_MS;
        use http_body::Body as _;
        use tonic_types::StatusExt;
        use tower::{ServiceExt, service_fn};

        fn limited() -> Problem {
            Problem::new(StatusCode::TOO_MANY_REQUESTS)
                .with_type(types::RATE_LIMITED)
                .with_detail("rate limit exceeded")
                .with_retry_after(Duration::from_millis(1500))
        }

        fn request(content_type: &'static str) -> Request<Bytes> {
            Request::builder()
                .header(CONTENT_TYPE, content_type)
                .body(Bytes::new())
                .unwrap()
        }

        async fn answer(content_type: &'static str) -> Response<Bytes> {
            let failing =
                service_fn(|_: Request<Bytes>| async { Err::<Response<Bytes>, _>(limited()) });
            ProblemResponse::new(failing)
                .oneshot(request(content_type))
                .await
                .unwrap()
        }

        #[tokio::test]
        async fn an_http_request_gets_problem_json() {
            let response = answer("application/json").await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
            assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
            assert!(response.headers().get("grpc-status").is_none());
            let body: Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["type"], types::RATE_LIMITED);
        }

        #[tokio::test]
        async fn a_grpc_request_gets_a_trailers_only_status_from_the_same_service() {
            let response = answer("application/grpc+proto").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
            assert_eq!(response.headers()["grpc-status"], "8");
            assert_eq!(response.headers()[GRPC_RETRY_PUSHBACK_MS], "1500");
            assert!(response.headers().get(http::header::RETRY_AFTER).is_none());
            assert!(response.body().is_empty());
            let status = tonic::Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert_eq!(status.message(), "rate limit exceeded");
            let details = status.get_error_details();
            assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
            assert_eq!(
                details.retry_info().unwrap().retry_delay,
                Some(Duration::from_millis(1500))
            );
        }

        #[tokio::test]
        async fn grpc_web_is_answered_as_http() {
            let response = answer("application/grpc-web").await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }

        #[tokio::test]
        async fn a_readiness_failure_on_a_grpc_request_is_trailers_only() {
            let (mock, mut handle) = tower_test::mock::pair::<Request<Bytes>, Response<Bytes>>();
            handle.send_error(Problem::new(StatusCode::BAD_GATEWAY).with_detail("pool closed"));
            let mut svc = ProblemResponse::new(
                mock.map_err(|e| *e.downcast::<Problem>().expect("the problem sent")),
            );
            let response = svc
                .ready()
                .await
                .unwrap()
                .call(request("application/grpc"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["grpc-status"], "14");
            assert!(response.body().is_empty());
            // The same broken service answers an HTTP caller in its format.
            let response = svc
                .ready()
                .await
                .unwrap()
                .call(request("application/json"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        }

        #[tokio::test]
        async fn wraps_a_service_shaped_like_tonic_routes() {
            type Body = tonic::body::Body;
            // tonic's `Routes`: tonic bodies both ways, an `Infallible` error.
            fn routes_like()
            -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone
            {
                service_fn(|_: Request<Body>| async { Ok(Response::new(Body::empty())) })
            }
            fn served<S>(_: &S)
            where
                S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
            {
            }
            let svc = ProblemLayer::new().layer(routes_like());
            served(&svc);

            // And a rejection in a tonic body is trailers-only and empty.
            let failing = ProblemLayer::new().layer(service_fn(|_: Request<Body>| async {
                Err::<Response<Body>, _>(limited())
            }));
            let request = Request::builder()
                .header(CONTENT_TYPE, "application/grpc")
                .body(Body::empty())
                .unwrap();
            let response = failing.oneshot(request).await.unwrap();
            assert_eq!(response.headers()["grpc-status"], "8");
            assert!(response.body().is_end_stream());
        }
    }

    #[tokio::test]
    async fn from_bytes_keeps_the_bytes_in_every_body() {
        use http_body_util::BodyExt;
        let bytes = Bytes::from_static(b"{}");
        assert_eq!(Bytes::from_bytes(bytes.clone()), bytes);
        assert_eq!(Vec::<u8>::from_bytes(bytes.clone()), b"{}".to_vec());
        let bodies = [
            http_body_util::Full::from_bytes(bytes.clone()).boxed(),
            http_body_util::combinators::BoxBody::<Bytes, Infallible>::from_bytes(bytes.clone()),
        ];
        for body in bodies {
            assert_eq!(body.collect().await.unwrap().to_bytes(), bytes);
        }
        let unsync =
            http_body_util::combinators::UnsyncBoxBody::<Bytes, std::io::Error>::from_bytes(
                bytes.clone(),
            );
        assert_eq!(unsync.collect().await.unwrap().to_bytes(), bytes);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_seconds(Duration::MAX), u64::MAX);
    }

    #[test]
    fn with_retry_after_sets_the_header_and_the_member_alike() {
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(problem.headers()[RETRY_AFTER], "2");
        assert_eq!(problem.extension("retry_after"), Some(&json!(2)));
    }

    #[test]
    fn a_palisade_type_brings_its_title_and_another_type_keeps_the_status_phrase() {
        let ours = Problem::new(StatusCode::TOO_MANY_REQUESTS).with_type(types::RATE_LIMITED);
        assert_eq!(ours.title(), "Rate limited");
        let theirs = Problem::new(StatusCode::TOO_MANY_REQUESTS).with_type("https://example.com/t");
        assert_eq!(theirs.title(), "Too Many Requests");
        let retitled = ours.with_title("Slow down");
        assert_eq!(retitled.title(), "Slow down");
    }

    #[test]
    fn problem_type_uris_are_their_constants_doc_pages() {
        assert_eq!(
            types::RATE_LIMITED,
            "https://docs.rs/palisade/latest/palisade/problem/types/constant.RATE_LIMITED.html"
        );
    }

    #[test]
    fn serialises_standard_members_and_extensions_flat() {
        let problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_type("https://example.com/probs/invalid")
            .with_title("Invalid order")
            .with_detail("2 fields are invalid")
            .with_instance("/orders")
            .with_extension("errors", json!([{"pointer": "/items/0/quantity"}]));
        let body: Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "https://example.com/probs/invalid",
                "title": "Invalid order",
                "status": 422,
                "detail": "2 fields are invalid",
                "instance": "/orders",
                "errors": [{"pointer": "/items/0/quantity"}],
            })
        );
    }

    #[test]
    fn about_blank_takes_the_reason_phrase_and_omits_empty_members() {
        let body: Value =
            serde_json::from_slice(&Problem::new(StatusCode::SERVICE_UNAVAILABLE).to_json())
                .unwrap();
        assert_eq!(
            body,
            json!({"type": "about:blank", "title": "Service Unavailable", "status": 503})
        );
    }

    #[test]
    fn titles_follow_rfc_9110_phrases() {
        assert_eq!(
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE).title(),
            "Content Too Large"
        );
        assert_eq!(
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY).title(),
            "Unprocessable Content"
        );
        assert_eq!(Problem::new(StatusCode::CONFLICT).title(), "Conflict");
    }

    #[test]
    fn response_carries_status_content_type_and_headers() {
        let response: Response<String> = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_header(RETRY_AFTER, HeaderValue::from_static("7"))
            .into_response::<Bytes>()
            .map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        assert!(response.body().contains("\"status\":429"));
    }

    #[test]
    #[should_panic(expected = "standard problem member")]
    fn extension_cannot_shadow_a_standard_member() {
        let _ = Problem::new(StatusCode::BAD_REQUEST).with_extension("status", 200);
    }
}
