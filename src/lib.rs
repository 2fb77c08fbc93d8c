//! Resilience middleware for [tower]: the layers a backend reaches for when a
//! dependency is slow or dead, a retry storm repeats a payment, one client floods
//! the API, or bad input slips past the boundary.
//!
//! Every layer is an independent [`tower::Layer`] that wraps any
//! [`tower::Service`], server side (axum, hyper, tonic) or client side (a tower
//! HTTP client, a tonic `Channel`). Each one sits in its own module behind its own feature:
//!
//! | module | feature | what it prevents |
//! |---|---|---|
//! | `timeout` | `timeout` | a slow dependency holding every request hostage |
//! | `circuit_breaker` | `circuit-breaker` | hammering a dependency that is down |
//! | `rate_limit` | `rate-limit` | one client flooding the API |
//! | `idempotency` | `idempotency` | a retried request running twice |
//! | `validate` | `validate` | bad input travelling three layers deep |
//! | `bulkhead` | `bulkhead` | one slow feature (or downstream) holding every connection; with Redis, a partner's fleet-wide concurrency cap |
//! | `adaptive_concurrency` | `adaptive-concurrency` | overload, without knowing the capacity: the limit follows measured latency |
//! | `load_shed` | `bulkhead` or `adaptive-concurrency` | the wrong request shed: priorities, never-shed routes, FIFO or adaptive LIFO with CoDel |
//! | `retry` | `retry` | a transient failure failing the request, and a retry storm: backoff with jitter, a budget, deadlines, only what is safe to send twice |
//! | `hedge` | `hedge` | the slow tail: a request slower than most gets a second attempt, within a budget |
//! | `throttle` | `throttle` | being refused by an upstream that said its limits: a client that waits for `Retry-After` and `RateLimit`, and backs off adaptively |
//! | `attempt` | `retry`, `hedge` or `throttle` | what they share: the retry `Budget`, `Replay` (which requests may be sent again), the HTTP and gRPC classifiers, `Retry-After` |
//! | `problem` | `http` | hand-written, inconsistent error bodies |
//! | `grpc` | `grpc` | a gRPC client reading a rejection as a protocol error: every layer answers a gRPC request with its own status and reads and forwards `grpc-timeout` |
//! | `config` | `config` | a restart to change a quota, a threshold or a timeout: every layer's settings from one TOML file (environment overrides), checked with errors that name the field, reloaded on `SIGHUP` or an edit through the layers' handles |
//! | [`observability`] | `metrics` (for metrics) | decisions nobody can see |
//!
//! Shared state (rate limits, idempotency keys) lives in a store: in memory for
//! one instance, or in Redis (feature `redis`; one Redis or a Redis Cluster)
//! when several instances must agree.
//!
//! # One vocabulary
//!
//! Every layer says the same thing the same way, so a stack of five reads as
//! one API. A new layer takes these names.
//!
//! | idea | the name in every layer |
//! |---|---|
//! | build a layer | `XLayer::new(..)`; a store-backed layer starts on a bounded `MemoryStore`, `XLayer::with_store(store, ..)` takes another |
//! | which quota applies (a plan, a tier) | `.tier(name, quotas)` and `.tier_of(extractor)`, any [`rate_limit::TierExtractor`]; the layer's `.handle()` replaces quotas at run time |
//! | what state is kept per (API key, client IP, route, tenant) | `.per(extractor)`, any [`key::KeyExtractor`]; [`key::Global`] is one state for all |
//! | keep two layers apart in one store | `.namespace(..)` |
//! | tell instances apart in metrics and traces | `.name(..)` (on the breaker's `Config`, which owns all of its settings) |
//! | the store fails or is slow | `.on_store_error(`[`store::OnStoreError`]`::FailOpen` or `FailClosed)`, each layer documents its default |
//! | a store's failure | [`store::StoreError`], re-exported by each store-backed layer |
//! | a bounded in-memory store | `MemoryStore::new()` (bounded by default), `MemoryStore::with_max_keys(n)`, `DEFAULT_MAX_KEYS` |
//! | the largest request body read | `.body_limit(bytes)`, `DEFAULT_BODY_LIMIT` |
//! | a default | `DEFAULT_` + the setter's name: `max_errors` and `DEFAULT_MAX_ERRORS` |
//! | how requests wait when a limit is reached | `.queue(`[`load_shed::Queue`]`)`: a bounded length, a maximum wait (checked against the request timeout by `Queue::within`), an order |
//! | send a request again | `.budget(`[`attempt::Budget`]`)` shared by the retries and hedges of one downstream; a request is sent again only if it is [`attempt::Replay`]; an attempt's result is judged by a [`attempt::Classify`] (`HttpClassifier`, `GrpcClassifier`, `ErrorIsRetryable`, a closure) |
//! | what is shed first | `.priority(extractor)`, any [`load_shed::PriorityExtractor`]; a refusal is a [`load_shed::Shed`] |
//! | what to do when something happens | `.on_<event>(Enum)`: `on_store_error`, `on_cancel`, `on_missing_caller_key` |
//! | what a layer parsed, for the handler | request extensions: [`key::CallerKey`], `IdempotencyKey`, `Deadline`, `Validated<T>` |
//! | a behaviour switched on or off | a setter taking `bool`: `.shadow(true)`, `.optional(true)` |
//! | a count | `NonZeroU32` / `NonZeroUsize`: a zero limit cannot be written; quotas are `const fn` |
//! | change settings while it runs | `handle.set_quotas`, `set_tier`, `set_config`, ...: from the next decision on, never dropping a request; `config::Handles` applies a whole file |
//! | steer a running layer | `.handle()` on the layer: the state is created once, by `new`, so every handle steers what the services use |
//! | an error | `Display` says what failed, `source()` says why (never both); one `#[non_exhaustive]` enum per layer |
//! | an error over HTTP | an RFC 9457 [`problem::Problem`] whose `type` is one of [`problem::types`]; `Retry-After` by [`problem::Problem::with_retry_after`] |
//! | a gRPC caller | the same stack: [`problem::ProblemLayer`] answers a gRPC request with its status (`grpc-status`, `grpc-retry-pushback-ms`, `google.rpc` details), its `grpc-timeout` is the `Deadline`, keys come from metadata; on a client, `grpc::ReplayableLayer` makes calls replayable and `circuit_breaker::GrpcCircuitBreakerLayer` counts them by status |
//! | a metric or a decision event | `palisade_<layer>_..` with the fields `layer`, `name`, `key`, `outcome`, `latency_us` ([`observability`]) |
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod problem;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "http")]
mod grpc_wire;

#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
pub mod timeout;

#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub mod circuit_breaker;

#[cfg(any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")))
)]
pub mod key;

#[cfg(any(
    feature = "rate-limit",
    feature = "idempotency",
    feature = "bulkhead",
    all(feature = "circuit-breaker", feature = "redis")
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "rate-limit",
        feature = "idempotency",
        feature = "bulkhead",
        all(feature = "circuit-breaker", feature = "redis")
    )))
)]
pub mod store;

#[cfg(any(feature = "bulkhead", feature = "adaptive-concurrency"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "bulkhead", feature = "adaptive-concurrency")))
)]
pub mod load_shed;

#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
pub mod bulkhead;

#[cfg(feature = "adaptive-concurrency")]
#[cfg_attr(docsrs, doc(cfg(feature = "adaptive-concurrency")))]
pub mod adaptive_concurrency;

#[cfg(any(feature = "retry", feature = "hedge", feature = "throttle"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "retry", feature = "hedge", feature = "throttle")))
)]
pub mod attempt;

#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;

#[cfg(feature = "hedge")]
#[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
pub mod hedge;

#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub mod throttle;

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

#[cfg(any(
    feature = "timeout",
    all(
        feature = "fast-clock",
        any(feature = "rate-limit", feature = "circuit-breaker")
    )
))]
mod clock;

#[cfg(all(
    feature = "redis",
    any(
        feature = "rate-limit",
        feature = "idempotency",
        feature = "bulkhead",
        feature = "circuit-breaker"
    )
))]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_conn;

/// The boxed error type used where a layer must hold errors of several types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

// The README's example compiles as a doctest, so it cannot drift from the API.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
