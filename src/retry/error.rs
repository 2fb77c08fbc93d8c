//! The error of the [`Retry`](super::Retry) service.

use std::time::Duration;

use crate::attempt::{Retryable, Verdict};

/// The error of a [`Retry`](super::Retry): the last attempt ran out of
/// time, or the inner service failed.
///
/// A response is never turned into an error: a final `503` is returned as
/// the `503` it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The last attempt did not answer within its per-try timeout (or what
    /// was left of the request's deadline); its future was dropped.
    #[error("attempt timed out after {budget:?}")]
    Elapsed {
        /// The time the attempt had.
        budget: Duration,
    },
    /// The inner service failed, and no further attempt was made.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// Whether the last attempt ran out of time.
    pub fn is_elapsed(&self) -> bool {
        matches!(self, Self::Elapsed { .. })
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Elapsed { .. } => None,
        }
    }
}

/// An elapsed attempt is worth another (a retry layer further out stops by
/// itself at the request's deadline); an inner error answers for itself.
impl<E: Retryable> Retryable for Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Elapsed { .. } => Verdict::Retry { after: None },
            Self::Inner(e) => e.verdict(),
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<E: crate::problem::IntoProblem> crate::problem::IntoProblem for Error<E> {
    /// `504 Gateway Timeout` of type
    /// [`TIMED_OUT`](crate::problem::types::TIMED_OUT), with a `budget_ms`
    /// member, for [`Error::Elapsed`]; the inner error's own problem
    /// otherwise.
    fn into_problem(self) -> crate::problem::Problem {
        match self {
            Self::Elapsed { budget } => {
                crate::timeout::error::elapsed_problem("the last attempt", budget)
            }
            Self::Inner(e) => e.into_problem(),
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
