//! Every error the API answers with, as an RFC 9457 problem.
//!
//! Handlers return [`ApiError`]; its [`IntoResponse`] builds the body with
//! [`palisade::problem::Problem`], so no handler writes error JSON by hand.

use axum::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, StatusCode};
use palisade::load_shed::Shed;
use palisade::problem::{IntoProblem, Problem};
use serde::Serialize;
use serde_json::json;

use crate::clients::ClientError;

/// One schema violation: where in the body, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the offending value; `""` is the whole body.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
    /// A stable name of the rule broken (`range`, `unknown_field`, ...),
    /// when the validate layer reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
            code: None,
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the body")]
    BodyRead,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("the Idempotency-Key header {0}")]
    IdempotencyKey(&'static str),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("payment: {0}")]
    Payment(ClientError),
    #[error("order storage unavailable")]
    Storage,
    /// The `orders` bulkhead refused the order's query: its share of the
    /// repository's connections is taken.
    #[error(transparent)]
    Overloaded(Shed),
}

impl ApiError {
    /// The problem this error answers with.
    pub fn to_problem(&self) -> Problem {
        if let ApiError::Overloaded(shed) = self {
            // palisade's own problem: type `overloaded`, `Retry-After`.
            return shed
                .clone()
                .into_problem()
                .with_title("Order storage overloaded");
        }
        let status = self.status();
        let problem = Problem::new(status).with_detail(self.to_string());
        match self {
            ApiError::Invalid(errors) => problem
                .with_title("Request body does not match the schema")
                .with_extension("errors", json!(errors)),
            ApiError::MalformedJson(_) => problem.with_title("Malformed JSON"),
            ApiError::IdempotencyKey(_) => problem.with_title("Invalid Idempotency-Key"),
            ApiError::IdempotencyMismatch => {
                problem.with_title("Idempotency-Key reused with a different body")
            }
            ApiError::Unauthorized => {
                problem.with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            ApiError::Payment(ClientError::BreakerOpen { retry_after }) => problem
                .with_title("Payment provider unavailable")
                .with_retry_after(*retry_after),
            ApiError::Payment(ClientError::Timeout) => {
                problem.with_title("Payment provider timed out")
            }
            ApiError::Payment(ClientError::Upstream(_)) => {
                problem.with_title("Payment provider failed")
            }
            _ => problem,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyRead | ApiError::MalformedJson(_) | ApiError::IdempotencyKey(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid(_) | ApiError::IdempotencyMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Payment(ClientError::Upstream(_)) => StatusCode::BAD_GATEWAY,
            ApiError::Payment(ClientError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Payment(ClientError::BreakerOpen { .. })
            | ApiError::Storage
            | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_problem().into_response::<axum::body::Body>()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn downstream_failures_map_to_502_503_504() {
        let cases = [
            (ClientError::Upstream("down".into()), 502),
            (ClientError::Timeout, 504),
            (
                ClientError::BreakerOpen {
                    retry_after: Duration::from_millis(1500),
                },
                503,
            ),
        ];
        for (error, status) in cases {
            let error = ApiError::Payment(error);
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.to_problem().status().as_u16(), status);
        }
    }

    #[test]
    fn breaker_open_sends_retry_after_in_whole_seconds_at_least_one() {
        for (wait, header) in [(1500, "2"), (0, "1"), (30_000, "30")] {
            let error = ApiError::Payment(ClientError::BreakerOpen {
                retry_after: Duration::from_millis(wait),
            });
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[http::header::RETRY_AFTER], header);
        }
    }

    #[test]
    fn stack_errors_are_classified() {
        use palisade::circuit_breaker::Error as Breaker;
        use palisade::timeout::Error as Timeout;
        let elapsed: crate::layers::StackError = Breaker::Inner(Timeout::Elapsed {
            budget: Duration::from_millis(5),
        });
        assert_eq!(
            crate::clients::classify(elapsed.into()),
            ClientError::Timeout
        );
        let open: crate::layers::StackError = Breaker::Open {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(
            crate::clients::classify(open.into()),
            ClientError::BreakerOpen {
                retry_after: Duration::from_millis(1500)
            }
        );
        let failed: crate::layers::StackError = Breaker::Inner(Timeout::Inner(
            crate::clients::TransportError::Status(StatusCode::INTERNAL_SERVER_ERROR),
        ));
        assert!(matches!(
            crate::clients::classify(failed.into()),
            ClientError::Upstream(_)
        ));
        let other: palisade::BoxError = "connection refused".into();
        assert!(matches!(
            crate::clients::classify(other),
            ClientError::Upstream(_)
        ));
    }
}
