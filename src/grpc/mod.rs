//! gRPC: every layer answers a gRPC request the way a gRPC client reads.
//!
//! tonic is built on tower, so palisade's layers stack on a tonic server
//! (`Server::builder().layer(..)`) and around a tonic `Channel`. What changes
//! for a gRPC request (one whose `content-type` is `application/grpc` or
//! `application/grpc+proto` and the like, see [`is_grpc`]) is chosen per
//! request, so one stack serves HTTP and gRPC callers alike:
//!
//! - **Rejections.** [`ProblemLayer`](crate::problem::ProblemLayer) answers a
//!   gRPC request's rejection with a trailers-only response: HTTP `200` with
//!   `grpc-status`, `grpc-message` and `grpc-status-details-bin`
//!   (`google.rpc` `ErrorInfo`, `RetryInfo`, `BadRequest`), and
//!   [`GRPC_RETRY_PUSHBACK_MS`] when the client should wait. [`code_of`] lists
//!   the code of each refusal.
//! - **Deadlines.** [`GRPC_TIMEOUT`] is parsed ([`parse_grpc_timeout`]) into
//!   the request's [`Deadline`](crate::timeout::Deadline), and the budget left
//!   is written into outgoing calls ([`grpc_timeout_value`]), so a deadline
//!   shrinks hop by hop as gRPC's own does.
//! - **Keys and replays.** The caller key and the idempotency key come from
//!   metadata (`x-api-key`, `idempotency-key`): metadata are HTTP/2 headers.
//!   The [idempotency layer](crate::idempotency) fingerprints the framed
//!   protobuf message, keeps a response with its trailers and replays it
//!   byte for byte; whether it keeps one follows its `grpc-status`.
//! - **Clients.** [`ReplayableLayer`] keeps a tonic call's message so a
//!   [retry](crate::retry) or a [hedge](crate::hedge) can send it again;
//!   [`GrpcClassifier`](crate::attempt::GrpcClassifier) retries
//!   `UNAVAILABLE` and honours `grpc-retry-pushback-ms`;
//!   [`GrpcCircuitBreakerLayer`](crate::circuit_breaker::GrpcCircuitBreakerLayer)
//!   counts a call by its `grpc-status`, in the headers or the trailers; a
//!   `Channel`'s transport error is retryable and answers as `UNAVAILABLE`.
//!
//! gRPC-Web (`application/grpc-web`) is answered as HTTP: its status travels
//! in the body, which no layer writes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::Request;
//! use palisade::problem::ProblemLayer;
//! use palisade::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A handler slower than the caller's 50 ms grpc-timeout.
//! let svc = ServiceBuilder::new()
//!     .layer(ProblemLayer::new())
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)).per_request())
//!     .service(service_fn(|_req: Request<tonic::body::Body>| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
//!     }));
//! let request = Request::builder()
//!     .header("content-type", "application/grpc")
//!     .header("grpc-timeout", "50m")
//!     .body(tonic::body::Body::empty())
//!     .unwrap();
//! let response = svc.oneshot(request).await.unwrap();
//! let status = tonic::Status::from_header_map(response.headers()).unwrap();
//! assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
//! # }
//! ```
//!
//! This module holds the wire format; the layers use it.

mod status;
mod timeout;
// Only a retry or a hedge sends a request again.
#[cfg(any(feature = "retry", feature = "hedge"))]
mod replay;

#[cfg(any(feature = "retry", feature = "hedge"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "retry", feature = "hedge"))))]
pub use self::replay::{DEFAULT_BODY_LIMIT, Replayable, ReplayableLayer};
pub use self::status::{
    ERROR_DOMAIN, GRPC_RETRY_PUSHBACK_MS, code_of, code_of_status, into_response, status_of,
    trailers_only_headers,
};
pub use self::timeout::{GRPC_TIMEOUT, InvalidGrpcTimeout, grpc_timeout_value, parse_grpc_timeout};

/// Whether a request (or response) with these headers is gRPC: its
/// `content-type` is `application/grpc`, alone or followed by `+` (a codec,
/// such as `+proto`) or `;` (parameters), in any case. gRPC-Web
/// (`application/grpc-web`) is not: its status travels in the body.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
/// use palisade::grpc::is_grpc;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
/// assert!(is_grpc(&headers));
/// headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
/// assert!(!is_grpc(&headers));
/// ```
#[inline]
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    crate::grpc_wire::is_grpc(headers)
}
