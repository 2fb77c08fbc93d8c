//! The error of the [`Timeout`](super::Timeout) service.

use std::time::Duration;

const GRPC_TIMEOUT_FORMAT: &str = "expected 1 to 8 digits and a unit (H, M, S, m, u or n)";

/// The error of a [`Timeout`](super::Timeout): the budget ran out, the
/// request's budget was malformed, or the inner service failed.
///
/// With feature `http`, [`Elapsed`](Error::Elapsed) answers as a
/// `504 Gateway Timeout` problem and [`InvalidBudget`](Error::InvalidBudget)
/// as a `400`; on the client side, match on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service did not answer within the budget; its future was
    /// dropped.
    #[error("request timed out after {budget:?}")]
    Elapsed {
        /// The budget the request had: the layer's timeout, or what was left
        /// of a per-request deadline when the call started.
        budget: Duration,
    },
    /// The request's budget header is malformed, so its deadline is
    /// unknown: the request was refused without calling the inner service.
    ///
    /// Raised for a gRPC request's `grpc-timeout` (feature `grpc`), which the
    /// gRPC wire format defines strictly; a malformed `Request-Timeout` is
    /// ignored instead.
    #[error("malformed grpc-timeout {value:?}: {GRPC_TIMEOUT_FORMAT}")]
    InvalidBudget {
        /// The header value as received, with bytes that are not visible
        /// ASCII escaped.
        value: String,
    },
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// Whether the budget ran out.
    pub fn is_elapsed(&self) -> bool {
        matches!(self, Self::Elapsed { .. })
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Elapsed { .. } | Self::InvalidBudget { .. } => None,
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<E: crate::problem::IntoProblem> crate::problem::IntoProblem for Error<E> {
    /// `504 Gateway Timeout` of type
    /// [`TIMED_OUT`](crate::problem::types::TIMED_OUT), with a `budget_ms`
    /// member, for [`Error::Elapsed`]; `400 Bad Request` of type
    /// [`INVALID_TIMEOUT`](crate::problem::types::INVALID_TIMEOUT), with the
    /// header under `errors`, for [`Error::InvalidBudget`]; the inner error's
    /// own problem otherwise.
    fn into_problem(self) -> crate::problem::Problem {
        match self {
            Self::Elapsed { budget } => elapsed_problem("the request", budget),
            Self::InvalidBudget { value } => {
                use crate::problem::{Problem, types};
                // As Display, which needs `E: Display`.
                let detail = format!("malformed grpc-timeout {value:?}: {GRPC_TIMEOUT_FORMAT}");
                let errors = serde_json::json!([{ "header": "grpc-timeout", "detail": detail }]);
                Problem::new(http::StatusCode::BAD_REQUEST)
                    .with_type(types::INVALID_TIMEOUT)
                    .with_detail(detail)
                    .with_extension("errors", errors)
            }
            Self::Inner(e) => e.into_problem(),
        }
    }
}

/// `504 Gateway Timeout` of type [`TIMED_OUT`](crate::problem::types::TIMED_OUT)
/// with a `budget_ms` member: `what` did not complete within `budget`.
#[cfg(feature = "http")]
pub(crate) fn elapsed_problem(what: &str, budget: Duration) -> crate::problem::Problem {
    use crate::problem::{Problem, types};
    let millis = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    Problem::new(http::StatusCode::GATEWAY_TIMEOUT)
        .with_type(types::TIMED_OUT)
        .with_detail(format!(
            "{what} did not complete within its budget of {millis} ms"
        ))
        .with_extension("budget_ms", millis)
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<E: crate::problem::IntoProblem> axum_core::response::IntoResponse for Error<E> {
    fn into_response(self) -> axum_core::response::Response {
        crate::problem::IntoProblem::into_problem(self).into_response()
    }
}
