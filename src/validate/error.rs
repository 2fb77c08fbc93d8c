//! The errors of [`ValidateRequest`](super::ValidateRequest).

use std::sync::Arc;

use crate::BoxError;

use super::violations::Violations;

/// Why a request was refused, or the inner service's error.
///
/// With feature `http` it answers as an RFC 9457 problem whose `type` is one
/// of [`problem::types`](crate::problem::types): 400 for missing headers,
/// unreadable bodies, malformed JSON (with `line` and `column`) and repeated
/// members (with `pointer`), 406, 413, 415 (with an `Accept` header listing
/// the accepted types), and 422 with every violation under `errors`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// Required headers are missing or invalid (400).
    #[error("invalid request headers: {0}")]
    Headers(Violations),
    /// The `Accept` header admits none of the types the route produces (406).
    #[error("none of the acceptable media types can be produced")]
    NotAcceptable {
        /// The media types the route produces.
        produces: Arc<[String]>,
    },
    /// The `Content-Type` is missing or not accepted (415).
    #[error("unsupported content type")]
    UnsupportedMediaType {
        /// The media types the route accepts.
        accepted: Arc<[String]>,
    },
    /// The body is larger than the limit (413), by its `Content-Length` or
    /// while it streamed in.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Reading the body failed (400).
    #[error("failed to read the request body")]
    Body(#[source] BoxError),
    /// The body is not well-formed JSON (400).
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Syntax {
        /// serde_json's description, which never quotes the input.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// An object in the body repeats a member the target type declares, so
    /// which value counts is ambiguous (400).
    #[error("the JSON body repeats the member at {pointer}")]
    DuplicateMember {
        /// The RFC 6901 pointer of the repeated member.
        pointer: String,
    },
    /// The body parsed into JSON but breaks the target type or its rules (422).
    #[error("invalid request body: {0}")]
    Invalid(Violations),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// The violations of a 400 (headers) or 422 rejection.
    pub fn violations(&self) -> Option<&Violations> {
        match self {
            Error::Headers(v) | Error::Invalid(v) => Some(v),
            _ => None,
        }
    }

    /// A short name of the rejection, for logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Headers(_) => "invalid headers",
            Error::NotAcceptable { .. } => "not acceptable",
            Error::UnsupportedMediaType { .. } => "unsupported media type",
            Error::TooLarge { .. } => "body too large",
            Error::Body(_) => "unreadable body",
            Error::Syntax { .. } => "malformed JSON",
            Error::DuplicateMember { .. } => "duplicate member",
            Error::Invalid(_) => "invalid body",
            Error::Inner(_) => "inner error",
        }
    }

    /// Whether the inner service failed (rather than the request being refused).
    pub fn is_inner(&self) -> bool {
        matches!(self, Error::Inner(_))
    }
}

#[cfg(feature = "http")]
mod http_impl {
    use http::header::ACCEPT;
    use http::{HeaderValue, StatusCode};
    use serde_json::Value;

    use super::Error;
    use crate::problem::{IntoProblem, Problem, types};
    use crate::validate::violations::Violations;

    fn errors(v: &Violations) -> Value {
        serde_json::to_value(v.as_slice()).expect("violations serialise to JSON")
    }

    fn counted(v: &Violations, what: &str) -> String {
        let total = v.total();
        let plural = if total == 1 { "" } else { "s" };
        if v.omitted() == 0 {
            format!("{total} invalid {what}{plural}")
        } else {
            let kept = v.as_slice().len();
            format!("{total} invalid {what}{plural}; the first {kept} are listed")
        }
    }

    impl<E: IntoProblem> IntoProblem for Error<E> {
        fn into_problem(self) -> Problem {
            match self {
                Error::Headers(v) => Problem::new(StatusCode::BAD_REQUEST)
                    .with_type(types::INVALID_HEADERS)
                    .with_detail(counted(&v, "header"))
                    .with_extension("errors", errors(&v)),
                Error::NotAcceptable { produces } => Problem::new(StatusCode::NOT_ACCEPTABLE)
                    .with_type(types::NOT_ACCEPTABLE)
                    .with_detail(format!(
                        "the response can only be {}",
                        produces.join(" or ")
                    ))
                    .with_extension("produces", produces.to_vec()),
                Error::UnsupportedMediaType { accepted } => {
                    let mut problem = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                        .with_type(types::UNSUPPORTED_MEDIA_TYPE)
                        .with_detail(format!(
                            "the content type must be {}",
                            accepted.join(" or ")
                        ))
                        .with_extension("accepted", accepted.to_vec());
                    // RFC 9110, section 12.5.1: Accept in a response lists the
                    // media types accepted in requests.
                    if let Ok(value) = HeaderValue::from_str(&accepted.join(", ")) {
                        problem = problem.with_header(ACCEPT, value);
                    }
                    problem
                }
                Error::TooLarge { limit } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                    .with_type(types::BODY_TOO_LARGE)
                    .with_detail(format!("request body is larger than {limit} bytes"))
                    .with_extension("limit", limit),
                Error::Body(_) => Problem::new(StatusCode::BAD_REQUEST)
                    .with_type(types::BODY_READ_FAILED)
                    .with_detail("failed to read the request body"),
                Error::Syntax {
                    message,
                    line,
                    column,
                } => Problem::new(StatusCode::BAD_REQUEST)
                    .with_type(types::MALFORMED_JSON)
                    .with_detail(format!(
                        "malformed JSON: {message} at line {line} column {column}"
                    ))
                    .with_extension("line", line)
                    .with_extension("column", column),
                Error::DuplicateMember { pointer } => Problem::new(StatusCode::BAD_REQUEST)
                    .with_type(types::DUPLICATE_MEMBER)
                    .with_detail("a member of the JSON body appears more than once")
                    .with_extension("pointer", pointer),
                Error::Invalid(v) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                    .with_type(types::VALIDATION_FAILED)
                    .with_detail(counted(&v, "value"))
                    .with_extension("errors", errors(&v)),
                Error::Inner(e) => e.into_problem(),
            }
        }
    }

    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl<E: IntoProblem> axum_core::response::IntoResponse for Error<E> {
        fn into_response(self) -> axum_core::response::Response {
            self.into_problem().into_response()
        }
    }
}
