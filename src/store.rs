//! What the store-backed layers share: how a store fails ([`StoreError`]) and
//! what a layer does then ([`OnStoreError`]).
//!
//! The rate limiter and the idempotency layer keep their state in a store
//! (in memory, or in Redis with feature `redis`). Both answer a store failure
//! the same way and report it with the same error, so one alert and one
//! `match` cover both.
//!
//! ```
//! use palisade::store::OnStoreError;
//! # #[cfg(feature = "rate-limit")] {
//! use std::num::NonZeroU32;
//! use palisade::rate_limit::{Quota, RateLimitLayer};
//!
//! // A limiter that must never let a request through unchecked.
//! let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(10).unwrap()))
//!     .on_store_error(OnStoreError::FailClosed);
//! # let _ = layer;
//! # }
//! ```

use std::time::Duration;

use crate::BoxError;

/// What a store-backed layer does when its store fails or does not answer
/// within its bound.
///
/// Each layer documents its own default: a rate limiter fails open (a
/// limiter must not take the service down with it), the idempotency layer
/// fails closed (no request runs without its duplicate protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Let the request through without the layer's protection and log a
    /// warning: availability first.
    FailOpen,
    /// Refuse the request with the layer's store error (`503 Service
    /// Unavailable` over HTTP).
    FailClosed,
}

/// A store failure: the store could not be reached, did not answer in time,
/// or answered something this crate does not understand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer within its bound.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis failed (connection, script, cluster routing).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis failed")]
    Redis(#[from] redis::RedisError),
    /// The store answered something this crate does not understand (an
    /// unexpected reply, a record that cannot be read back).
    #[error("store answered something unexpected: {0}")]
    Protocol(String),
    /// Fewer replicas than asked acknowledged a write in time (feature
    /// `redis`, `wait_for_replicas`): a failover now could lose it.
    #[error("write acknowledged by {acked} of {wanted} replicas within {timeout:?}")]
    NotReplicated {
        /// The replicas that acknowledged the write.
        acked: u32,
        /// The replicas asked for.
        wanted: u32,
        /// How long the store waited.
        timeout: Duration,
    },
    /// A bounded memory store is full of live entries.
    #[error("store full")]
    Full,
    /// Any other backend failure.
    #[error(transparent)]
    Other(BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[cfg(feature = "redis")]
    #[test]
    fn redis_cause_is_the_source_not_part_of_the_message() {
        let cause = redis::RedisError::from((redis::ErrorKind::Io, "connection reset"));
        let err = StoreError::from(cause);
        assert_eq!(err.to_string(), "redis failed");
        assert!(
            err.source()
                .unwrap()
                .to_string()
                .contains("connection reset")
        );
    }

    #[test]
    fn timeout_says_its_bound() {
        let err = StoreError::Timeout(Duration::from_millis(50));
        assert_eq!(err.to_string(), "store did not answer within 50ms");
        assert!(err.source().is_none());
    }
}
