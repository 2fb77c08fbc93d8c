//! The rate limit layer's error.

use std::fmt;
use std::time::Duration;

use super::store::{Decision, Limits, StoreError};

/// A rejection by the rate limit layer, or the inner service's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The key spent its quota: retry later.
    #[error("{0}")]
    Limited(RateLimited),
    /// The request costs more than the smallest burst: it can never pass.
    #[error("request cost {cost} exceeds the largest allowed cost {max}")]
    CostTooHigh {
        /// The cost of the request.
        cost: u32,
        /// The smallest burst among the quotas.
        max: u32,
    },
    /// The request carries no key and the layer rejects such requests.
    #[error("request has no rate limit key")]
    MissingKey,
    /// The store failed and the layer fails closed.
    #[error(transparent)]
    Store(StoreError),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

/// A typed "429": how long to wait, and the state of the quota that denied.
///
/// Client-side stacks match on [`Error::Limited`] and read it instead of
/// parsing headers.
#[derive(Clone)]
#[non_exhaustive]
pub struct RateLimited {
    /// Time until the same request would be allowed.
    pub retry_after: Duration,
    /// The burst (`q`) of the quota that denied.
    pub limit: u32,
    /// Cells left in that quota (fewer than the request costs).
    pub remaining: u64,
    /// Time until that quota is full again.
    pub reset: Duration,
    limits: Limits,
    decision: Decision,
}

impl RateLimited {
    pub(crate) fn new(limits: Limits, decision: Decision) -> Self {
        Self {
            retry_after: decision.retry_after(),
            limit: limits.quotas()[decision.quota()].max_burst(),
            remaining: decision.remaining(),
            reset: decision.reset(),
            limits,
            decision,
        }
    }

    /// The name of the quota that denied, as the headers show it.
    pub fn policy(&self) -> &str {
        self.limits.name(self.decision.quota())
    }

    /// All the limits of the layer that denied.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl fmt::Debug for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimited")
            .field("policy", &self.policy())
            .field("retry_after", &self.retry_after)
            .field("limit", &self.limit)
            .field("remaining", &self.remaining)
            .field("reset", &self.reset)
            .finish()
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited, retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}

#[cfg(feature = "http")]
mod http_impl {
    use http::header::RETRY_AFTER;
    use http::{HeaderValue, StatusCode};

    use super::{Error, RateLimited};
    use crate::problem::{IntoProblem, Problem};
    use crate::rate_limit::headers::{
        RATELIMIT, RATELIMIT_POLICY, ratelimit_field, retry_after_seconds,
    };

    impl IntoProblem for RateLimited {
        fn into_problem(self) -> Problem {
            let seconds = retry_after_seconds(self.retry_after);
            let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
                .with_detail(format!(
                    "rate limit \"{}\" exceeded, retry after {seconds} s",
                    self.policy()
                ))
                .with_header(RETRY_AFTER, HeaderValue::from(seconds));
            if let Ok(v) = HeaderValue::from_str(self.limits.policy_field()) {
                problem = problem.with_header(RATELIMIT_POLICY, v);
            }
            if let Ok(v) = HeaderValue::from_str(&ratelimit_field(&self.limits, &self.decision)) {
                problem = problem.with_header(RATELIMIT, v);
            }
            problem
        }
    }

    impl<E: IntoProblem> IntoProblem for Error<E> {
        fn into_problem(self) -> Problem {
            match self {
                Error::Limited(limited) => limited.into_problem(),
                Error::CostTooHigh { cost, max } => Problem::new(StatusCode::TOO_MANY_REQUESTS)
                    .with_detail(format!(
                        "request cost {cost} exceeds the largest allowed cost {max}"
                    )),
                Error::MissingKey => Problem::new(StatusCode::BAD_REQUEST)
                    .with_detail("request has no rate limit key"),
                Error::Store(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail("rate limit store unavailable")
                    .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
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

    #[cfg(feature = "axum")]
    impl axum_core::response::IntoResponse for RateLimited {
        fn into_response(self) -> axum_core::response::Response {
            self.into_problem().into_response()
        }
    }
}
