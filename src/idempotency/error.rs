//! Errors of the idempotency layer and its stores.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};

use super::fingerprint::DuplicateMember;
use super::key::InvalidKey;
use crate::BoxError;
use crate::problem::{IntoProblem, Problem};

pub use crate::store::StoreError;

/// The error of [`Idempotency`](super::Idempotency).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The method requires an `Idempotency-Key` and the request has none (400).
    #[error("this request requires an idempotency-key header")]
    MissingKey,
    /// The `Idempotency-Key` header is not a valid key (400).
    #[error("invalid idempotency key: {0}")]
    InvalidKey(InvalidKey),
    /// The scope extractor found no caller identity to scope the key by (400).
    #[error("no caller identity to scope the idempotency key by")]
    MissingScope,
    /// The request body exceeds the limit the layer buffers to fingerprint it (413).
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request body could not be read (400).
    #[error("failed to read the request body: {0}")]
    Body(BoxError),
    /// The JSON body repeats a member name in one object, so the request it
    /// stands for is ambiguous (400); only in
    /// [`FingerprintMode::CanonicalJson`](super::FingerprintMode::CanonicalJson).
    #[error(transparent)]
    DuplicateMember(DuplicateMember),
    /// A request with the same key is still running (409 with `Retry-After`).
    #[error("a request with this idempotency key is in flight, retry after {retry_after:?}")]
    InFlight {
        /// When to try again.
        retry_after: Duration,
    },
    /// The key was used with another request (another method, path, chosen
    /// headers or body) (422).
    #[error("this idempotency key was used with a different request")]
    Mismatch,
    /// The request with this key ran, but its response was not kept (too
    /// large, or its body failed or was cut off while the layer read it),
    /// so it cannot be replayed; it is never run again (410).
    #[error("the request with this idempotency key ran but its response was not kept")]
    NotRetained,
    /// The store failed and the layer fails closed (503).
    #[error("idempotency store unavailable: {0}")]
    Store(#[source] StoreError),
    /// The inner service panicked; the key was released (500).
    #[error("the handler panicked")]
    Panicked,
    /// The inner service failed; the key was released.
    #[error(transparent)]
    Inner(E),
}

/// The `type` URIs of the problems this layer answers with: each one is the
/// documentation page of its constant, so a client that follows it reads
/// what the problem means (as RFC 9457 recommends).
pub mod problem_types {
    /// 400: missing key.
    pub const MISSING_KEY: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.MISSING_KEY.html";
    /// 400: invalid key.
    pub const INVALID_KEY: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.INVALID_KEY.html";
    /// 409: a request with the key is in flight.
    pub const IN_FLIGHT: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.IN_FLIGHT.html";
    /// 422: the key was used with a different request.
    pub const MISMATCH: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.MISMATCH.html";
    /// 400: the JSON body repeats a member name.
    pub const DUPLICATE_MEMBER: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.DUPLICATE_MEMBER.html";
    /// 410: the response was not kept.
    pub const NOT_RETAINED: &str = "https://docs.rs/palisade/latest/palisade/idempotency/error/problem_types/constant.NOT_RETAINED.html";
}

impl<E: IntoProblem> IntoProblem for Error<E> {
    fn into_problem(self) -> Problem {
        match self {
            Self::MissingKey => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(problem_types::MISSING_KEY)
                .with_title("Idempotency-Key required")
                .with_detail("this request requires an Idempotency-Key header"),
            Self::InvalidKey(reason) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(problem_types::INVALID_KEY)
                .with_title("Invalid Idempotency-Key")
                .with_detail(format!("{reason}: a key is 1 to 255 visible ASCII characters")),
            Self::MissingScope => Problem::new(StatusCode::BAD_REQUEST)
                .with_detail("no caller identity to scope the idempotency key by"),
            Self::Body(e) => Problem::new(StatusCode::BAD_REQUEST)
                .with_detail(format!("failed to read the request body: {e}")),
            Self::DuplicateMember(duplicate) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(problem_types::DUPLICATE_MEMBER)
                .with_title("Duplicate JSON member")
                .with_detail(format!(
                    "{duplicate}: each object member name may appear once"
                )),
            Self::BodyTooLarge { limit } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                .with_detail(format!("request body larger than {limit} bytes")),
            Self::InFlight { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Problem::new(StatusCode::CONFLICT)
                    .with_type(problem_types::IN_FLIGHT)
                    .with_title("Request in flight")
                    .with_detail("a request with this idempotency key is still being processed; retry later")
                    .with_header(RETRY_AFTER, HeaderValue::from(secs.max(1)))
            }
            Self::Mismatch => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                .with_type(problem_types::MISMATCH)
                .with_title("Idempotency-Key reused")
                .with_detail("this idempotency key was used with a different request"),
            Self::NotRetained => Problem::new(StatusCode::GONE)
                .with_type(problem_types::NOT_RETAINED)
                .with_title("Response not retained")
                .with_detail(
                    "the request with this idempotency key ran, but its response was not kept; it will not run again",
                ),
            Self::Store(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("the idempotency store is unavailable; retry later"),
            Self::Panicked => Problem::new(StatusCode::INTERNAL_SERVER_ERROR),
            Self::Inner(inner) => inner.into_problem(),
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

/// The layer was configured in a way that cannot work.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The lease would expire before the request's own timeout. No longer
    /// returned: the heartbeat renews the lease while the request runs.
    #[error("idempotency lease {lease:?} is shorter than the request timeout {timeout:?}")]
    LeaseShorterThanTimeout {
        /// The lease.
        lease: Duration,
        /// The request timeout.
        timeout: Duration,
    },
}
