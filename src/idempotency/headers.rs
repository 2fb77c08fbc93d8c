//! Which response headers a stored response keeps for replay.

use crate::grpc_wire::is_grpc;
use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode};

/// Hop-by-hop headers: about one connection, never part of a replay.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers that belong to the session of the caller who ran the request,
/// dropped by default: replaying a `Set-Cookie` would hand that session to
/// whoever replays. `Authentication-Info` carries the next nonce of one
/// authentication exchange. `WWW-Authenticate` stays: it describes the
/// resource's challenge, the same for every caller.
pub(crate) const SESSION: [HeaderName; 3] = [
    header::SET_COOKIE,
    HeaderName::from_static("set-cookie2"),
    HeaderName::from_static("authentication-info"),
];

/// The headers a gRPC client cannot read a response without: its
/// content-type and, in a trailers-only response (an error), its status.
/// Kept for a gRPC response even when an explicit list leaves them out.
const GRPC: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
];

/// The headers of `headers` kept for replay: exactly `only` when given
/// (plus, for a gRPC response, the [`GRPC`] ones); otherwise all but
/// hop-by-hop ones and, unless `keep_session`, the [`SESSION`] ones.
/// The HTTP status a response's outcome has when deciding whether to store
/// it: its own, or for a gRPC response the status its `grpc-status` pairs
/// with in `google.rpc.Code` (`UNAVAILABLE` a `503`, `ABORTED` a `409`,
/// `RESOURCE_EXHAUSTED` a `429`), since every gRPC answer is an HTTP `200`.
/// `status_in` is where the grpc-status is: the headers of a trailers-only
/// response, or the trailers of a full one.
pub(crate) fn outcome_status(
    status: StatusCode,
    headers: &HeaderMap,
    status_in: Option<&HeaderMap>,
) -> StatusCode {
    if !is_grpc(headers) {
        return status;
    }
    let Some(code) = status_in.and_then(|h| h.get("grpc-status")) else {
        return status;
    };
    let http = match code.as_bytes() {
        b"0" => 200,
        // CANCELLED: a try-again answer, as a 408 is.
        b"1" => 408,
        // ALREADY_EXISTS (6) is a final answer, stored as a 4xx is; ABORTED
        // (10) asks for another try, as a 409 does.
        b"3" | b"6" | b"9" | b"11" => 400,
        b"4" => 504,
        b"5" => 404,
        b"10" => 409,
        b"7" => 403,
        b"8" => 429,
        b"12" => 501,
        b"14" => 503,
        b"16" => 401,
        // UNKNOWN, INTERNAL, DATA_LOSS, and a status no gRPC client could read.
        _ => 500,
    };
    StatusCode::from_u16(http).expect("a valid status")
}

pub(crate) fn kept_headers(
    headers: &HeaderMap,
    only: Option<&[HeaderName]>,
    keep_session: bool,
) -> HeaderMap {
    let grpc = only.is_some() && is_grpc(headers);
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let keep = match only {
            Some(only) => only.contains(name) || (grpc && GRPC.contains(name)),
            None => {
                !HOP_BY_HOP.contains(name)
                    && name.as_str() != "keep-alive"
                    && (keep_session || !SESSION.contains(name))
            }
        };
        if keep {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("set-cookie", "session=abc"),
            ("set-cookie", "csrf=def"),
            ("set-cookie2", "old=1"),
            ("authentication-info", "nextnonce=\"n\""),
            ("www-authenticate", "Bearer"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
        ] {
            h.append(name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn session_and_hop_by_hop_headers_are_dropped_by_default() {
        let kept = kept_headers(&response_headers(), None, false);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "www-authenticate"]);
    }

    #[test]
    fn session_headers_are_kept_when_asked() {
        let kept = kept_headers(&response_headers(), None, true);
        assert_eq!(kept.get_all("set-cookie").iter().count(), 2);
        assert!(kept.contains_key("set-cookie2"));
        assert!(kept.contains_key("authentication-info"));
        assert!(!kept.contains_key("connection"));
    }

    #[test]
    fn an_explicit_list_keeps_the_status_of_a_grpc_response() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/grpc+proto"),
            ("grpc-status", "5"),
            ("grpc-message", "no such order"),
            ("grpc-status-details-bin", "CAU"),
            ("x-trace", "t1"),
            ("x-order-id", "ord_1"),
        ] {
            h.append(name, value.parse().unwrap());
        }
        let only = [HeaderName::from_static("x-order-id")];
        let kept = kept_headers(&h, Some(&only), false);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "x-order-id"
            ]
        );
        // Not gRPC: the list alone.
        h.insert(
            header::CONTENT_TYPE,
            "application/grpc-web".parse().unwrap(),
        );
        let kept = kept_headers(&h, Some(&only), false);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-order-id"]);
    }

    #[test]
    fn an_explicit_list_keeps_exactly_its_headers() {
        let only = [header::SET_COOKIE, header::CONNECTION];
        let kept = kept_headers(&response_headers(), Some(&only), false);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept.get_all("set-cookie").iter().count(), 2);
    }
}
