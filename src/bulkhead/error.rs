//! The bulkhead's error.

use crate::load_shed::Shed;
use crate::store::StoreError;

/// A refusal by the bulkhead, or the inner service's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The key is saturated: no permit within the queue's bounds.
    #[error(transparent)]
    Shed(Shed),
    /// The store failed and the layer fails closed; the cause is the
    /// [`source`](std::error::Error::source).
    #[error("store unavailable")]
    Store(#[source] StoreError),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

#[cfg(feature = "http")]
mod http_impl {
    use std::time::Duration;

    use http::StatusCode;

    use super::Error;
    use crate::problem::{IntoProblem, Problem, types};

    impl<E: IntoProblem> IntoProblem for Error<E> {
        fn into_problem(self) -> Problem {
            match self {
                Error::Shed(shed) => shed.into_problem(),
                // The cause stays in the logs: it names internals.
                Error::Store(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type(types::STORE_UNAVAILABLE)
                    .with_detail("store unavailable")
                    .with_retry_after(Duration::from_secs(1)),
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
