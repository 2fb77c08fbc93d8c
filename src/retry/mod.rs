//! Sends a failed request again: when that is safe, worth it, affordable and
//! in time.
//!
//! A [`RetryLayer`] classifies each attempt's result ([`Classify`]): an
//! answer to return ([`Verdict::Done`]), a failure another attempt may fix
//! ([`Verdict::Retry`], with the server's requested wait if it gave one), or
//! a failure not to retry ([`Verdict::Stop`]). It retries with exponential
//! [`Backoff`] and jitter, up to [`max_attempts`](RetryLayer::max_attempts)
//! (three by default, the first included), while a shared retry [`Budget`]
//! allows it and the request's deadline leaves time for another attempt.
//! Any tower service works, through a classifier:
//! [`ErrorIsRetryable`](crate::attempt::ErrorIsRetryable) for any error
//! that says whether it is transient ([`Retryable`](crate::attempt::Retryable)),
//! and, with feature `http`, [`HttpClassifier`](crate::attempt::HttpClassifier)
//! (`408`, `409`, `425`, `429`, `500`, `502`, `503`, `504`, after their
//! `Retry-After`) and [`GrpcClassifier`](crate::attempt::GrpcClassifier)
//! (`UNAVAILABLE`, after its `grpc-retry-pushback-ms`).
//!
//! ```
//! # #[cfg(all(feature = "http", feature = "circuit-breaker", feature = "idempotency"))] {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use palisade::attempt::HttpClassifier;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Config};
//! use palisade::idempotency::IdempotencyKeyLayer;
//! use palisade::retry::RetryLayer;
//! use palisade::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A payments API that is busy on the first call.
//! let calls = Arc::new(AtomicUsize::new(0));
//! let seen = calls.clone();
//! let payments = service_fn(move |req: Request<Full<Bytes>>| {
//!     let busy = seen.fetch_add(1, Ordering::SeqCst) == 0;
//!     assert!(req.headers().contains_key("idempotency-key"));
//!     let status = if busy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CREATED };
//!     let response = Response::builder()
//!         .status(status)
//!         .header("retry-after", "1")
//!         .body(Full::new(Bytes::new()))
//!         .unwrap();
//!     async move { Ok::<_, std::io::Error>(response) }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(IdempotencyKeyLayer::new()) // one key for every attempt
//!     .layer(RetryLayer::new(HttpClassifier::new()).name("payments"))
//!     .layer(CircuitBreakerLayer::new(Config::new())) // an open breaker is not retried
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))) // each attempt's own timeout
//!     .service(payments);
//!
//! let charge = Request::post("/charges").body(Full::new(Bytes::from("{}"))).unwrap();
//! let response = client.oneshot(charge).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! assert_eq!(calls.load(Ordering::SeqCst), 2, "retried once, after the server's 1 s");
//! # }
//! # }
//! ```
//!
//! # The order of the layers
//!
//! - **Idempotency key outside the retry**: the key is attached once, so
//!   every attempt of a `POST` carries the same key and the server runs it
//!   once. Without a key, a `POST` or a `PATCH` is never retried.
//! - **Circuit breaker inside**: each attempt counts with the breaker, and an
//!   open breaker's refusal ([`Verdict::Stop`]) ends the retries at once,
//!   spending no budget. The retry must see the breaker's error by type
//!   (`circuit_breaker::Error`), not boxed.
//! - **A per-try timeout inside** (a [`TimeoutLayer`](crate::timeout::TimeoutLayer)
//!   below the breaker, or [`RetryLayer::per_try_timeout`]): a hung attempt
//!   is cut and retried, where a timeout outside would end them all. Put the
//!   request's overall timeout outside the retry.
//!
//! # The budget
//!
//! Retries multiply load exactly when a downstream is failing. Every
//! retryable failure takes a token from a [`Budget`], every success earns a
//! share of one back, and another attempt is sent only while more than half
//! the tokens are left: in an outage, a few retries spend the budget and
//! then only first attempts go out, until successes earn it back (gRPC's
//! retry throttling). The layer creates one budget in [`RetryLayer::new`],
//! shared by its clones and every service they build; give one budget
//! ([`RetryLayer::budget`]) to every layer that calls the same downstream,
//! hedges included: a hedge layer below a retry on the same budget only
//! spends from it, so a success is earned once.
//!
//! # Deadlines and per-try timeouts
//!
//! A request may carry a [`Deadline`](crate::timeout::Deadline) (set by a
//! per-request [`Timeout`](crate::timeout::Timeout) further out, or by a
//! handler passing its own on). No attempt runs past it: each attempt gets
//! its own timeout, the per-try timeout cut to the time left, and its
//! request carries that earlier deadline, so a per-request timeout further
//! in and deadline propagation see it. A wait that would leave less than a
//! per-try timeout (with none set, no time at all) is not taken: the last
//! answer is returned instead. The first attempt goes out while any time is
//! left; with none left, the call fails with [`Error::Elapsed`] and the inner
//! service is not called. A retry whose inner service is still not ready
//! when starting would leave it less than its per-try timeout (with none
//! set, at the deadline) is not sent either: the call fails with
//! [`Error::Elapsed`] (the answer before the wait is gone by then). An
//! attempt cut by its timeout counts as a retryable failure; if it was the
//! last, the error is [`Error::Elapsed`].
//!
//! # What is never retried
//!
//! - a [`Verdict::Done`] answer, whatever its status (a `404`, a `422`);
//! - a [`Verdict::Stop`]: an open circuit breaker, a local refusal (a
//!   bulkhead, a rate limit, an adaptive limiter), a gRPC server's negative
//!   pushback;
//! - a request that [`Replay`](crate::attempt::Replay) refuses to copy: over
//!   HTTP, a method that is not idempotent (`POST`, `PATCH`) without an
//!   `Idempotency-Key`; its answer is returned as it is;
//! - a server's `Retry-After` (either form, delta-seconds or an HTTP-date)
//!   longer than [`max_retry_after`](RetryLayer::max_retry_after): the
//!   answer is returned, `Retry-After` and all, for the caller to decide;
//! - anything once the budget is spent, the attempts are used up, or the
//!   deadline leaves no time; a gRPC `DEADLINE_EXCEEDED` is not retryable;
//! - an inner service that fails `poll_ready` before a retry: it is no
//!   longer able to serve (tower's contract), so its error is returned, as
//!   tower's `Retry` does, counted `stopped`, spending no budget.
//!
//! The last answer is returned as it is: a final `503` stays a `503`
//! response; only a last attempt cut by its timeout, or a deadline that
//! leaves no time to send one (see above), is an [`Error::Elapsed`].
//!
//! # Streaming bodies
//!
//! A request is sent again from a copy taken before the first attempt, so
//! its body must be held in memory: `Full<Bytes>`, `Bytes`, `String`,
//! `Vec<u8>`, `Empty` or `()` ([`ReplayBody`](crate::attempt::ReplayBody)).
//! A streaming body (hyper's `Incoming`, axum's `Body`) is read once and
//! cannot be sent again: a request carrying one does not satisfy the
//! layer's bounds. Collect it into `Full<Bytes>` first to retry it, or give
//! a body type of your own a `ReplayBody` that returns `None`, so such
//! requests are sent once, never retried.
//!
//! # Compared with `tower::retry`
//!
//! tower's `Retry` runs any `Policy` you write. This layer is that policy,
//! written: classification by status and error type, jittered exponential
//! backoff, `Retry-After` in both forms and capped, a lock-free budget shared
//! with hedging, deadlines and per-try timeouts, safe-method and
//! `Idempotency-Key` rules, and metrics and tracing.
//!
//! # Metrics and tracing
//!
//! With feature `metrics`, every finished attempt counts once in
//! `palisade_retry_decisions_total{name, outcome}`, by what followed it:
//! `done`, `retried`, `exhausted` (the attempts were used up),
//! `budget_exhausted`, `deadline` (no time for another attempt; also, with
//! no attempt behind it, a call made with its deadline already passed and
//! a retry the inner service did not let in in time), `not_replayable`,
//! `retry_after_too_long` or `stopped`. Each wait before a retry is
//! recorded in the histogram `palisade_retry_wait_seconds{name}`. Every
//! attempt is a `tracing` event with `layer = "retry"`, `name`, `outcome`,
//! `attempt` (from 1) and `latency_us`: `TRACE` for `done`, `DEBUG` for the
//! others; each wait is a `DEBUG` event with `wait_ms`. See
//! [`crate::observability`].
//!
//! # Cost
//!
//! The first attempt is polled in place: no allocation, and no clock read
//! unless the request carries a deadline, a per-try timeout is set, or
//! `DEBUG` events are on (for `latency_us`). A success adds the copy of the
//! request (taken before the call, as tower's `Retry` takes it), a clone of
//! the inner service, the reference count of the layer's settings, and one
//! atomic load of the budget while it is full, as it is in steady state.
//! A per-try timeout or a deadline boxes the first attempt's timer; a retry
//! moves the rest of the work into one boxed future.
//!
//! [`Classify`]: crate::attempt::Classify
//! [`Verdict::Done`]: crate::attempt::Verdict::Done
//! [`Verdict::Retry`]: crate::attempt::Verdict::Retry
//! [`Verdict::Stop`]: crate::attempt::Verdict::Stop
//! [`Budget`]: crate::attempt::Budget

mod backoff;
mod config;
pub mod error;
pub mod future;
mod layer;
mod observe;
mod service;

pub use self::{
    backoff::{Backoff, Delays, Jitter},
    config::{DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER},
    error::Error,
    layer::RetryLayer,
    service::Retry,
};
pub use crate::attempt::ConfigError;
