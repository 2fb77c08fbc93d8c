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

pub(crate) use crate::grpc_wire::is_grpc_content_type;
