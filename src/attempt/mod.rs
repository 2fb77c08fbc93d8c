//! What the layers that send a request more than once share: the retry
//! [`Budget`], which requests may be sent again ([`Replay`]), and what a
//! finished attempt means ([`Verdict`], [`Classify`], [`Retryable`]).
//!
//! Used by [`retry`](crate::retry) and [`hedge`](crate::hedge) (and, for
//! `Retry-After`, by [`throttle`](crate::throttle)); compiled with any of
//! their features.
//!
//! With feature `http`: requests with a replayable body ([`ReplayBody`]) are
//! sent again only when their method is idempotent or they carry an
//! `Idempotency-Key`; [`HttpClassifier`] and [`GrpcClassifier`] classify
//! responses by status; [`parse_retry_after`] reads both forms of
//! `Retry-After`.
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use http::{Request, Response, StatusCode};
//! use palisade::attempt::{Classify, HttpClassifier, Replay, Verdict};
//!
//! let post = Request::post("/charges").body(String::from("{}")).unwrap();
//! assert!(post.replay().is_none(), "a POST without an Idempotency-Key is sent once");
//!
//! let busy: Result<_, std::io::Error> = Ok(Response::builder()
//!     .status(StatusCode::SERVICE_UNAVAILABLE)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap());
//! assert_eq!(
//!     HttpClassifier::new().classify(&busy),
//!     Verdict::Retry { after: Some(std::time::Duration::from_secs(2)) },
//! );
//! # }
//! ```

mod budget;
mod classify;
#[cfg(feature = "http")]
mod http;
mod replay;

pub use self::budget::Budget;
pub use self::classify::{Classify, ErrorIsRetryable, Retryable, Verdict};
#[cfg(feature = "http")]
#[allow(unused_imports)] // for throttle, which is not written yet
pub(crate) use self::http::retry_after;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::{
    GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, GrpcClassifier, HttpClassifier, parse_retry_after,
};
pub use self::replay::Replay;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::replay::{IDEMPOTENCY_KEY, ReplayBody, is_idempotent};

/// A setting out of its range, named with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `field` is out of range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// The allowed range.
        reason: &'static str,
    },
}
