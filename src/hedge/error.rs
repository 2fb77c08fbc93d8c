//! The hedge layer's error.

use crate::attempt::{Retryable, Verdict};

/// The error of a [`Hedge`](super::Hedge): the inner service's error, from
/// the attempt whose answer was returned.
///
/// The layer refuses nothing by itself: a hedge it cannot send is simply
/// not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// The inner service's error.
    pub fn into_inner(self) -> E {
        match self {
            Self::Inner(e) => e,
        }
    }
}

/// The inner error answers: a retry layer above the hedge sees through it.
impl<E: Retryable> Retryable for Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Inner(e) => e.verdict(),
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<E: crate::problem::IntoProblem> crate::problem::IntoProblem for Error<E> {
    /// The inner error's own problem.
    fn into_problem(self) -> crate::problem::Problem {
        match self {
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
