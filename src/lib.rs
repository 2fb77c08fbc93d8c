//! Resilience middleware for [tower]: the layers a backend reaches for when a
//! dependency is slow or dead, a retry storm repeats a payment, one client floods
//! the API, or bad input slips past the boundary.
//!
//! Every layer is an independent [`tower::Layer`] that wraps any
//! [`tower::Service`], server side (axum, hyper) or client side (a tower HTTP
//! client). Each one sits in its own module behind its own feature:
//!
//! | module | feature | what it prevents |
//! |---|---|---|
//! | `timeout` | `timeout` | a slow dependency holding every request hostage |
//! | `circuit_breaker` | `circuit-breaker` | hammering a dependency that is down |
//! | `rate_limit` | `rate-limit` | one client flooding the API |
//! | `idempotency` | `idempotency` | a retried request running twice |
//! | `validate` | `validate` | bad input travelling three layers deep |
//! | `problem` | `http` | hand-written, inconsistent error bodies |
//! | [`observability`] | `metrics` (for metrics) | decisions nobody can see |
//!
//! Shared state (rate limits, idempotency keys) lives in a store: in memory for
//! one instance, or in Redis (feature `redis`; one Redis or a Redis Cluster)
//! when several instances must agree.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod problem;

#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
pub mod timeout;

#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub mod circuit_breaker;

#[cfg(any(feature = "rate-limit", feature = "idempotency"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "rate-limit", feature = "idempotency"))))]
pub mod key;

#[cfg(any(feature = "rate-limit", feature = "idempotency"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "rate-limit", feature = "idempotency"))))]
pub mod store;

#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;

#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
pub mod idempotency;

#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
pub mod validate;

pub mod observability;

#[cfg(all(
    feature = "redis",
    any(feature = "rate-limit", feature = "idempotency")
))]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_conn;

/// The boxed error type used where a layer must hold errors of several types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

// The README's example compiles as a doctest, so it cannot drift from the API.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
