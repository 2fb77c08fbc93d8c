//! The gRPC wire facts the HTTP layers read whether or not feature `grpc`
//! is on (what an idempotency record keeps, how a breaker counts a call):
//! the public [`grpc`](crate::grpc) module re-exports them.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};

/// Whether these headers' `content-type` is gRPC (see
/// `grpc::is_grpc`, which documents it).
#[inline]
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(is_grpc_content_type)
}

/// `is_grpc` on the `content-type` value alone.
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
