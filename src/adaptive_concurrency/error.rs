//! The adaptive limiter's error.

use crate::load_shed::Shed;

/// A refusal by the adaptive limiter, or the inner service's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The limit is reached: no permit within the queue's bounds.
    #[error(transparent)]
    Shed(Shed),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

#[cfg(feature = "http")]
mod http_impl {
    use super::Error;
    use crate::problem::{IntoProblem, Problem};

    impl<E: IntoProblem> IntoProblem for Error<E> {
        fn into_problem(self) -> Problem {
            match self {
                Error::Shed(shed) => shed.into_problem(),
                Error::Inner(e) => e.into_problem(),
            }
        }
    }

    #[cfg(feature = "axum")]
    impl<E: IntoProblem> axum_core::response::IntoResponse for Error<E> {
        fn into_response(self) -> axum_core::response::Response {
            self.into_problem().into_response()
        }
    }
}
