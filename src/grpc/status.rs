//! A problem as a gRPC status: its code, message and rich details.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::Value;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::problem::{FromBytes, Problem, types};

/// `grpc-retry-pushback-ms`: the wait, in milliseconds, a gRPC server asks
/// of a client before it retries (gRFC A6); a negative value asks it not to.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The `domain` of the `google.rpc.ErrorInfo` palisade attaches.
pub const ERROR_DOMAIN: &str = "palisade";

const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// The gRPC code of a problem.
///
/// A problem of one of palisade's [`types`] takes the code the gRPC status
/// code guide gives its failure; any other problem takes the code of its HTTP
/// status, as `google.rpc.Code` pairs them.
///
/// | problem | code |
/// |---|---|
/// | rate limited; body too large | `RESOURCE_EXHAUSTED` |
/// | one request costs more than the quota | `RESOURCE_EXHAUSTED`, told not to retry |
/// | circuit open, overloaded (shed, bulkhead full), store unavailable | `UNAVAILABLE` |
/// | timed out | `DEADLINE_EXCEEDED` |
/// | invalid headers or body, malformed `grpc-timeout`, missing caller key, missing or invalid `Idempotency-Key` | `INVALID_ARGUMENT` |
/// | the same `Idempotency-Key` in flight | `ABORTED` |
/// | an `Idempotency-Key` reused with another request; its response not retained | `FAILED_PRECONDITION` |
/// | body unreadable; internal | `INTERNAL` |
///
/// ```
/// use http::StatusCode;
/// use palisade::grpc::code_of;
/// use palisade::problem::{Problem, types};
///
/// let limited = Problem::new(StatusCode::TOO_MANY_REQUESTS).with_type(types::RATE_LIMITED);
/// assert_eq!(code_of(&limited), tonic::Code::ResourceExhausted);
/// assert_eq!(code_of(&Problem::new(StatusCode::NOT_FOUND)), tonic::Code::NotFound);
/// ```
pub fn code_of(problem: &Problem) -> Code {
    match problem.type_uri() {
        types::RATE_LIMITED | types::COST_TOO_HIGH | types::BODY_TOO_LARGE => {
            Code::ResourceExhausted
        }
        types::CIRCUIT_OPEN | types::OVERLOADED | types::STORE_UNAVAILABLE => Code::Unavailable,
        types::TIMED_OUT => Code::DeadlineExceeded,
        types::MISSING_CALLER_KEY
        | types::INVALID_TIMEOUT
        | types::INVALID_HEADERS
        | types::UNSUPPORTED_MEDIA_TYPE
        | types::NOT_ACCEPTABLE
        | types::MALFORMED_JSON
        | types::DUPLICATE_MEMBER
        | types::VALIDATION_FAILED
        | types::MISSING_IDEMPOTENCY_KEY
        | types::INVALID_IDEMPOTENCY_KEY => Code::InvalidArgument,
        // A concurrency conflict: retry the whole sequence later (the guide's
        // ABORTED), not the precondition of a reused key.
        types::IN_FLIGHT => Code::Aborted,
        // The key's state forbids the call until the client changes something
        // (a new key): the guide's FAILED_PRECONDITION.
        types::KEY_REUSED | types::NOT_RETAINED => Code::FailedPrecondition,
        types::BODY_READ_FAILED | types::INTERNAL => Code::Internal,
        _ => code_of_status(problem.status()),
    }
}

/// The gRPC code of an HTTP status, by the pairs `google.rpc.Code` documents
/// (a `400` is `INVALID_ARGUMENT`, a `409` `ABORTED`), with the gateway
/// statuses of the gRPC HTTP mapping (`502`, `503` `UNAVAILABLE`).
pub fn code_of_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 411 | 414 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 410 => Code::NotFound,
        409 => Code::Aborted,
        412 | 428 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        416 => Code::OutOfRange,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        400..=499 => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

/// The gRPC status of a problem: [`code_of`], the problem's `detail` (or its
/// title) as the message, and the rich details a gRPC client can read with
/// `tonic_types::StatusExt`: `ErrorInfo` (reason: the problem type's name,
/// such as `RATE_LIMITED`; domain [`ERROR_DOMAIN`]) for palisade's types,
/// `RetryInfo` when the problem has a [`retry_after`](Problem::retry_after),
/// and `BadRequest` with one field violation per entry of its `errors`.
pub fn status_of(problem: &Problem) -> tonic::Status {
    let message = problem.detail().unwrap_or(problem.title());
    let mut details = ErrorDetails::new();
    let mut any = false;
    if types::title(problem.type_uri()).is_some() {
        let reason = type_name(problem.type_uri());
        let metadata = HashMap::from([("type".to_owned(), problem.type_uri().to_owned())]);
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        any = true;
    }
    if let Some(wait) = problem.retry_after() {
        details.set_retry_info(Some(wait));
        any = true;
    }
    if let Some(Value::Array(errors)) = problem.extension("errors") {
        for error in errors {
            let field = ["pointer", "header", "field"]
                .iter()
                .find_map(|name| error.get(name).and_then(Value::as_str))
                .unwrap_or_default();
            let description = error
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or_default();
            details.add_bad_request_violation(field, description);
            any = true;
        }
    }
    if any {
        tonic::Status::with_error_details(code_of(problem), message, details)
    } else {
        tonic::Status::new(code_of(problem), message)
    }
}

// "https://docs.rs/.../constant.RATE_LIMITED.html" -> "RATE_LIMITED"
fn type_name(uri: &str) -> &str {
    uri.rsplit_once("constant.")
        .map(|(_, rest)| rest.trim_end_matches(".html"))
        .unwrap_or(uri)
}

/// The headers of a problem's trailers-only gRPC response: `content-type`,
/// `grpc-status`, `grpc-message` (percent-encoded),
/// `grpc-status-details-bin`, the problem's own headers as metadata (such as
/// `RateLimit`, `Retry-After`), and `grpc-retry-pushback-ms` when the
/// problem says when to come back (or `-1` when no retry can succeed).
pub fn trailers_only_headers(problem: &Problem) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in problem.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
    if let Some(wait) = problem.retry_after() {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(millis));
    } else if problem.type_uri() == types::COST_TOO_HIGH {
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from_static("-1"));
    }
    // Cannot fail: the message is percent-encoded and the details base64.
    let _ = status_of(problem).add_header(&mut headers);
    // Retry-After is for HTTP clients; gRPC has its own pushback.
    headers.remove(RETRY_AFTER);
    headers
}

/// A problem as a trailers-only gRPC response: HTTP `200` with an empty body
/// and the [`trailers_only_headers`].
pub fn into_response<B: FromBytes>(problem: &Problem) -> Response<B> {
    let mut response = Response::new(B::from_bytes(Bytes::new()));
    *response.headers_mut() = trailers_only_headers(problem);
    response
}

/// A tonic `Channel`'s error (the upstream refused the connection, reset it
/// or could not be reached) answers as `502`, so a client stack of palisade
/// layers around a `Channel`, under a [`ProblemLayer`](crate::problem::ProblemLayer),
/// gives its caller `UNAVAILABLE`, as gRPC does for a transport failure.
/// The error's text stays out of the answer (it names the upstream's
/// address); it is logged at `DEBUG`.
///
/// A `Channel` also times its calls out at the `grpc-timeout` they carry
/// (`tonic::TimeoutExpired` in the error's source chain): that error is the
/// deadline running out, not the upstream failing, so it answers `504`
/// ([`TIMED_OUT`](types::TIMED_OUT)), `DEADLINE_EXCEEDED`, as the timeout
/// layer that forwarded the `grpc-timeout` would have. Without this, the
/// two timers that end at the same instant race, and the caller gets
/// `UNAVAILABLE` or `DEADLINE_EXCEEDED` by chance.
impl crate::problem::IntoProblem for tonic::transport::Error {
    fn into_problem(self) -> Problem {
        tracing::debug!(error = %self, "upstream transport error");
        if deadline_expired(&self) {
            return Problem::new(StatusCode::GATEWAY_TIMEOUT)
                .with_type(types::TIMED_OUT)
                .with_detail("the upstream call timed out");
        }
        Problem::new(StatusCode::BAD_GATEWAY)
            .with_detail("the upstream service could not be reached")
    }
}

/// Whether `tonic::TimeoutExpired` is in the error's source chain.
fn deadline_expired(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rate_limit_carries_its_pushback_and_retry_info() {
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_type(types::RATE_LIMITED)
            .with_detail("rate limit exceeded")
            .with_retry_after(Duration::from_millis(1500));
        let headers = trailers_only_headers(&problem);
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(headers[GRPC_RETRY_PUSHBACK_MS], "1500");
        assert!(headers.get(RETRY_AFTER).is_none());
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "rate limit exceeded");
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    }

    #[test]
    fn validation_errors_become_field_violations() {
        let problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_type(types::VALIDATION_FAILED)
            .with_extension(
                "errors",
                serde_json::json!([{"pointer": "/qty", "code": "range", "detail": "must be 1 to 10"}]),
            );
        let status = status_of(&problem);
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "/qty");
        assert_eq!(violations[0].description, "must be 1 to 10");
    }

    #[test]
    fn a_malformed_timeout_is_an_invalid_argument() {
        let problem = Problem::new(StatusCode::OK).with_type(types::INVALID_TIMEOUT);
        assert_eq!(code_of(&problem), Code::InvalidArgument);
    }

    #[test]
    fn a_message_with_any_characters_survives_the_trip() {
        let problem = Problem::new(StatusCode::BAD_REQUEST).with_detail("bad: ü \r\n %41 \0");
        let headers = trailers_only_headers(&problem);
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.message(), "bad: ü \r\n %41 \0");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn every_palisade_type_has_a_code_other_than_unknown() {
        let all = [
            types::RATE_LIMITED,
            types::COST_TOO_HIGH,
            types::MISSING_CALLER_KEY,
            types::STORE_UNAVAILABLE,
            types::CIRCUIT_OPEN,
            types::TIMED_OUT,
            types::INVALID_TIMEOUT,
            types::BODY_TOO_LARGE,
            types::BODY_READ_FAILED,
            types::INVALID_HEADERS,
            types::UNSUPPORTED_MEDIA_TYPE,
            types::NOT_ACCEPTABLE,
            types::MALFORMED_JSON,
            types::DUPLICATE_MEMBER,
            types::VALIDATION_FAILED,
            types::MISSING_IDEMPOTENCY_KEY,
            types::INVALID_IDEMPOTENCY_KEY,
            types::IN_FLIGHT,
            types::KEY_REUSED,
            types::NOT_RETAINED,
            types::OVERLOADED,
            types::INTERNAL,
        ];
        for uri in all {
            // A 200 status: the code must come from the type, not the status.
            let problem = Problem::new(StatusCode::OK).with_type(uri);
            let code = code_of(&problem);
            assert!(
                !matches!(code, Code::Ok | Code::Unknown | Code::Internal)
                    || uri == types::INTERNAL
                    || uri == types::BODY_READ_FAILED,
                "{uri}: {code:?}"
            );
            assert_eq!(
                status_of(&problem)
                    .get_error_details()
                    .error_info()
                    .unwrap()
                    .reason,
                type_name(uri)
            );
        }
    }

    #[test]
    fn other_problems_take_the_code_of_their_status() {
        for (status, code) in [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::Aborted),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
        ] {
            let problem = Problem::new(StatusCode::from_u16(status).unwrap());
            assert_eq!(code_of(&problem), code, "{status}");
            assert!(
                status_of(&problem).details().is_empty(),
                "{status}: no details for about:blank"
            );
        }
    }

    #[test]
    fn a_transport_error_is_unavailable() {
        use crate::problem::IntoProblem;
        // A Channel to a port nothing listens on fails to connect.
        let error = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tonic::transport::Endpoint::from_static("http://127.0.0.1:1")
                    .connect()
                    .await
                    .unwrap_err()
            });
        let problem = error.into_problem();
        assert_eq!(problem.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(code_of(&problem), Code::Unavailable);
    }
}
