//! The throttle's error.

use std::time::Duration;

use crate::attempt::{Retryable, Verdict};

/// A call the throttle did not send, or the inner service's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The upstream allows the call only after `retry_after`, which does
    /// not fit the request's deadline or the layer's maximum wait: refused
    /// at once rather than sent to be refused.
    #[error("throttled: the upstream allows the next call in {retry_after:?}")]
    Throttled {
        /// How long until the upstream allows the call.
        retry_after: Duration,
    },
    /// The adaptive throttle rejected the call: the upstream has been
    /// refusing too many.
    #[error("rejected by the adaptive throttle")]
    Rejected,
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// Whether the throttle refused the call (throttled or rejected), so it
    /// was never sent.
    pub fn is_refused(&self) -> bool {
        !matches!(self, Self::Inner(_))
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }
}

/// A refusal is [`Verdict::Stop`]: a retry would only meet the same
/// schedule (the throttle already waited as long as the request could).
impl<E: Retryable> Retryable for Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Inner(e) => e.verdict(),
            _ => Verdict::Stop,
        }
    }
}

/// The `Retry-After` of a rejection by the adaptive throttle, which knows
/// no better.
const REJECTED_RETRY_AFTER: Duration = Duration::from_secs(1);

mod http_impl {
    use http::StatusCode;

    use super::{Error, REJECTED_RETRY_AFTER};
    use crate::problem::{IntoProblem, Problem, types};

    impl<E: IntoProblem> IntoProblem for Error<E> {
        /// `503 Service Unavailable` of type
        /// [`OVERLOADED`](crate::problem::types::OVERLOADED) with
        /// `Retry-After` for a refusal: a dependency asked this service to
        /// slow down. The inner error's own problem otherwise.
        fn into_problem(self) -> Problem {
            match self {
                Error::Throttled { retry_after } => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type(types::OVERLOADED)
                    .with_detail("a dependency asked to slow down")
                    .with_retry_after(retry_after),
                Error::Rejected => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_type(types::OVERLOADED)
                    .with_detail("a dependency is overloaded")
                    .with_retry_after(REJECTED_RETRY_AFTER),
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
