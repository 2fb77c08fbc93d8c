//! Errors of the idempotency layer and its stores.

use std::time::Duration;

use http::StatusCode;

use super::fingerprint::DuplicateMember;
use super::key::InvalidKey;
use crate::BoxError;
use crate::problem::{IntoProblem, Problem, types};

pub use crate::store::StoreError;

/// How long a client refused for a store failure is told to wait
/// (`Retry-After`), as the rate limiter says for its own store.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The error of [`Idempotency`](super::Idempotency).
///
/// `Display` says what failed; the cause, where there is one, is only its
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The method requires an `Idempotency-Key` and the request has none (400).
    #[error("request has no idempotency-key header")]
    MissingKey,
    /// The `Idempotency-Key` header is not a valid key (400); the reason is
    /// the source.
    #[error("invalid idempotency key")]
    InvalidKey(#[source] InvalidKey),
    /// The [`per`](super::IdempotencyLayer::per) extractor found no caller
    /// key to keep the idempotency key per (400).
    #[error("request has no caller key")]
    MissingCallerKey,
    /// The request body is larger than the
    /// [`body_limit`](super::IdempotencyLayer::body_limit) the layer buffers
    /// to fingerprint it (413).
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request body could not be read (400); the cause is the source.
    #[error("failed to read the request body")]
    Body(#[source] BoxError),
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
    /// The store failed and the layer fails closed (503); the
    /// [`StoreError`] is the source.
    #[error("store unavailable")]
    Store(#[source] StoreError),
    /// The inner service panicked; the key was released (500).
    #[error("the handler panicked")]
    Panicked,
    /// The inner service failed; the key was released.
    #[error(transparent)]
    Inner(E),
}

impl<E: IntoProblem> IntoProblem for Error<E> {
    fn into_problem(self) -> Problem {
        match self {
            Self::MissingKey => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::MISSING_IDEMPOTENCY_KEY)
                .with_detail("this request requires an Idempotency-Key header"),
            Self::InvalidKey(reason) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::INVALID_IDEMPOTENCY_KEY)
                .with_detail(format!("{reason}: a key is 1 to 255 visible ASCII characters")),
            Self::MissingCallerKey => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::MISSING_CALLER_KEY)
                .with_detail("request has no caller key to keep its idempotency key per"),
            // The cause stays in the logs: it may say things about the
            // server a client has no business reading.
            Self::Body(_) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::BODY_READ_FAILED)
                .with_detail("failed to read the request body"),
            Self::DuplicateMember(duplicate) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::DUPLICATE_MEMBER)
                .with_detail(format!(
                    "{duplicate}: each object member name may appear once"
                )),
            Self::BodyTooLarge { limit } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                .with_type(types::BODY_TOO_LARGE)
                .with_detail(format!("request body is larger than {limit} bytes")),
            Self::InFlight { retry_after } => Problem::new(StatusCode::CONFLICT)
                .with_type(types::IN_FLIGHT)
                .with_detail(
                    "a request with this idempotency key is still being processed; retry later",
                )
                .with_retry_after(retry_after),
            Self::Mismatch => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                .with_type(types::KEY_REUSED)
                .with_detail("this idempotency key was used with a different request"),
            Self::NotRetained => Problem::new(StatusCode::GONE)
                .with_type(types::NOT_RETAINED)
                .with_detail(
                    "the request with this idempotency key ran, but its response was not kept; it will not run again",
                ),
            Self::Store(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::STORE_UNAVAILABLE)
                .with_detail("store unavailable")
                .with_retry_after(STORE_RETRY_AFTER),
            Self::Panicked => Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_type(types::INTERNAL),
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
