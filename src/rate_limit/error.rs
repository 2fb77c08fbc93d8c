//! The rate limit layer's error.

use std::fmt;
use std::time::Duration;

use super::decision::Decision;
use super::limits::Limits;
use crate::store::StoreError;

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
    /// The request carries no caller key and the layer rejects such
    /// requests ([`OnMissingCallerKey::Reject`](super::OnMissingCallerKey::Reject)).
    #[error("request has no caller key")]
    MissingCallerKey,
    /// The store failed and the layer fails closed; the cause is the
    /// [`source`](std::error::Error::source).
    #[error("store unavailable")]
    Store(#[source] StoreError),
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
            limit: limits.quotas()[decision.quota()].max_burst().get(),
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
    use std::time::Duration;

    use http::{HeaderValue, StatusCode};

    use super::{Error, RateLimited};
    use crate::problem::{IntoProblem, Problem, retry_after_seconds, types};
    use crate::rate_limit::headers::{RATELIMIT, RATELIMIT_POLICY, ratelimit_field};

    impl IntoProblem for RateLimited {
        fn into_problem(self) -> Problem {
            let seconds = retry_after_seconds(self.retry_after);
            let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
                .with_type(types::RATE_LIMITED)
                .with_detail(format!(
                    "rate limit \"{}\" exceeded, retry after {seconds} s",
                    self.policy()
                ))
                .with_retry_after(self.retry_after);
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
                    .with_type(types::COST_TOO_HIGH)
                    .with_detail(format!(
                        "request cost {cost} exceeds the largest allowed cost {max}"
                    )),
                Error::MissingCallerKey => Problem::new(StatusCode::BAD_REQUEST)
                    .with_type(types::MISSING_CALLER_KEY)
                    .with_detail("request has no caller key"),
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

    #[cfg(feature = "axum")]
    impl axum_core::response::IntoResponse for RateLimited {
        fn into_response(self) -> axum_core::response::Response {
            self.into_problem().into_response()
        }
    }
}
