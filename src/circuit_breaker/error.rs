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

/// Whole seconds for `Retry-After`: rounded up, at least 1.
#[cfg(feature = "http")]
pub(crate) fn retry_after_secs(retry_after: Duration) -> u64 {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<E: crate::problem::IntoProblem> crate::problem::IntoProblem for Error<E> {
    /// `503 Service Unavailable` with `Retry-After` (whole seconds, rounded
    /// up, at least 1) for [`Error::Open`]; the inner error's own problem
    /// otherwise.
    fn into_problem(self) -> crate::problem::Problem {
        match self {
            Error::Open { retry_after } => {
                let secs = retry_after_secs(retry_after);
                crate::problem::Problem::new(http::StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail("a dependency is failing; the circuit breaker is open")
                    .with_extension("retry_after", secs)
                    .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(secs))
            }
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

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }
}
