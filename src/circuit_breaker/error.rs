//! The error of the circuit breaker.

use std::time::Duration;

/// The error of [`CircuitBreaker`](super::CircuitBreaker): the breaker
/// refused the call, or the inner service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The breaker is open (or half-open with every probe permit taken): the
    /// inner service was not called.
    #[error("circuit open, retry after {retry_after:?}")]
    Open {
        /// How long until the breaker lets a call through again (zero while
        /// half-open: a probe is deciding).
        retry_after: Duration,
    },
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// Whether the breaker refused the call.
    pub fn is_open(&self) -> bool {
        matches!(self, Error::Open { .. })
    }

    /// The wait before retrying, when the breaker refused the call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Open { retry_after } => Some(*retry_after),
            Error::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            Error::Open { .. } => None,
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<E: crate::problem::IntoProblem> crate::problem::IntoProblem for Error<E> {
    /// `503 Service Unavailable` of type
    /// [`CIRCUIT_OPEN`](crate::problem::types::CIRCUIT_OPEN), with
    /// `Retry-After` (by [`Problem::with_retry_after`](crate::problem::Problem::with_retry_after):
    /// whole seconds, rounded up, at least 1) for [`Error::Open`]; the inner
    /// error's own problem otherwise.
    fn into_problem(self) -> crate::problem::Problem {
        use crate::problem::{Problem, types};
        match self {
            Error::Open { retry_after } => Problem::new(http::StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::CIRCUIT_OPEN)
                .with_detail("a dependency is failing; the circuit breaker is open")
                .with_retry_after(retry_after),
            Error::Inner(e) => e.into_problem(),
        }
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<E: crate::problem::IntoProblem> axum_core::response::IntoResponse for Error<E> {
    fn into_response(self) -> axum_core::response::Response {
        crate::problem::IntoProblem::into_problem(self).into_response()
    }
}
