//! The refusal of a saturated gate.

use std::fmt;
use std::time::Duration;

use super::Priority;

/// Why a gate refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Every permit was taken and the queue was full (or there is none).
    Full,
    /// The request waited its queue's maximum wait without a permit.
    Waited,
    /// A request of a higher priority took its place in a full queue.
    Displaced,
    /// It stood in a queue that had not emptied for a CoDel interval,
    /// longer than the CoDel target: its client has likely given up.
    Stale,
}

impl Reason {
    /// The `outcome` label value and tracing field of this refusal.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Waited => "waited",
            Self::Displaced => "displaced",
            Self::Stale => "stale",
        }
    }
}

/// A request refused by a bulkhead or an adaptive limiter: the typed
/// `503`. Client-side stacks match on it; over HTTP it is a problem of type
/// [`OVERLOADED`](crate::problem::types::OVERLOADED) with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shed {
    /// Why it was refused.
    pub reason: Reason,
    /// The refused request's priority.
    pub priority: Priority,
    /// When to try again.
    pub retry_after: Duration,
}

impl Shed {
    pub(crate) fn new(reason: Reason, priority: Priority, retry_after: Duration) -> Self {
        Self {
            reason,
            priority,
            retry_after,
        }
    }
}

impl fmt::Display for Shed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            Reason::Full => "no permit and no room in the queue",
            Reason::Waited => "no permit within the maximum wait",
            Reason::Displaced => "a request of higher priority took its place in the queue",
            Reason::Stale => "queued too long while the queue stood",
        };
        write!(f, "overloaded: {why}")
    }
}

impl std::error::Error for Shed {}

#[cfg(feature = "http")]
mod http_impl {
    use http::StatusCode;

    use super::Shed;
    use crate::problem::{IntoProblem, Problem, types};

    impl IntoProblem for Shed {
        fn into_problem(self) -> Problem {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::OVERLOADED)
                .with_detail(self.to_string())
                .with_retry_after(self.retry_after)
        }
    }

    #[cfg(feature = "axum")]
    impl axum_core::response::IntoResponse for Shed {
        fn into_response(self) -> axum_core::response::Response {
            self.into_problem().into_response()
        }
    }
}
