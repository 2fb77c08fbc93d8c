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

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};

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
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(is_grpc_content_type)
}

/// [`is_grpc`] on the `content-type` value alone.
#[inline]
pub(crate) fn is_grpc_content_type(value: &HeaderValue) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let bytes = value.as_bytes();
    bytes.len() >= GRPC.len()
        && bytes[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(bytes.get(GRPC.len()), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_and_nothing_else() {
        let is = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is(yes), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpcx",
            "application/json",
            "application/gr",
            "",
        ] {
            assert!(!is(no), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
