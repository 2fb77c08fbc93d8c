//! A client-side, outbound limiter that waits rather than fails: it reads
//! what the upstream says of its limits and paces later calls to fit.
//!
//! An API that rate-limits its clients says so: a `429 Too Many Requests`
//! with `Retry-After`, or the `RateLimit` fields of every answer. A client
//! that ignores them gets more `429`s, and its retries make it worse. Put a
//! [`ThrottleLayer`] in the client stack of such an upstream and it is
//! polite: after a refusal, nothing reaches the upstream before the instant
//! it allows, and a small remaining quota spreads the calls until its reset.
//! Calls that must wait, wait (first come, first served); a call whose wait
//! does not fit its deadline is refused at once with
//! [`Error::Throttled`], without being sent to be refused.
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Config};
//! use palisade::throttle::ThrottleLayer;
//! use palisade::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // An upstream that refuses the first call for two seconds.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let upstream = service_fn(move |_: Request<()>| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     let status = if n == 0 { 429 } else { 200 };
//!     let response = Response::builder().status(status).header("retry-after", "2");
//!     async move { Ok::<_, std::io::Error>(response.body(()).unwrap()) }
//! });
//! let client = ServiceBuilder::new()
//!     // The budget of the whole call: its deadline bounds the throttle's wait.
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)).per_request())
//!     .layer(ThrottleLayer::new().name("payments"))
//!     .layer(CircuitBreakerLayer::new(Config::new()))
//!     .service(upstream);
//!
//! let first = client.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(first.status(), 429);
//! let start = tokio::time::Instant::now();
//! let second = client.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(second.status(), 200);
//! assert_eq!(start.elapsed(), Duration::from_secs(2), "sent when the upstream allowed");
//! # }
//! ```
//!
//! # Where it goes in a client stack
//!
//! From the outside in: a per-request [`TimeoutLayer`](crate::timeout::TimeoutLayer)
//! (or a [`Deadline`](crate::timeout::Deadline) the request already carries),
//! a retry, the throttle, a circuit breaker, a per-attempt timeout, the
//! client.
//!
//! - **Below the retry**: a retry after a `429` passes through the throttle,
//!   which holds it until the upstream allows it; a refusal of the throttle
//!   is [`Verdict::Stop`](crate::attempt::Verdict::Stop)
//!   ([`attempt::Retryable`](crate::attempt::Retryable)), so a retry does
//!   not spin on it.
//! - **Below the request's deadline**: the wait is bounded by it.
//! - **Above the breaker and the per-attempt timeout**: a wait is not an
//!   attempt, so it neither counts as a slow call nor eats the attempt's
//!   timeout; the breaker's refusals pass through as [`Error::Inner`]. A
//!   call that waited asks the breaker again when its turn comes, so the
//!   breaker decides as of the instant the call is sent.
//!
//! # What it reads
//!
//! Every answer, from every clone of the layer and its services (the
//! schedule is shared: give each upstream its own layer):
//!
//! | answer | what follows |
//! |---|---|
//! | `429` or `503` with `Retry-After` (seconds or an HTTP-date) | no call before that instant |
//! | gRPC `RESOURCE_EXHAUSTED` or `UNAVAILABLE` (a trailers-only answer) with `grpc-retry-pushback-ms` | no call before the pushback |
//! | `429` without `Retry-After` (nor a spent quota, which says when) | a pause of [`DEFAULT_PAUSE`] ([`ThrottleLayer::pause`]), doubled by each further `429`, reset by an answer that is not a refusal |
//! | `RateLimit: "default";r=0;t=5` | no call for 5 s; with `RateLimit-Policy: "default";q=10;w=60` too, calls go one per `w/q` from the reset on, not all at once |
//! | `RateLimit: "default";r=2;t=10` | calls at least `t/r` (5 s) apart until the reset; a client already slower never waits |
//! | draft 07's `RateLimit: limit=100, remaining=0, reset=5` and `RateLimit-Policy: 100;w=60` | the same |
//! | `RateLimit-Remaining` with `RateLimit-Reset`, or `X-RateLimit-Remaining` with `X-RateLimit-Reset` | the same (a reset of 10^9 seconds or more, whole or with a fraction, is a Unix time, as GitHub's and Discord's `X-RateLimit-Reset`) |
//!
//! `RateLimit` and `RateLimit-Policy` are the IETF draft's
//! (draft-ietf-httpapi-ratelimit-headers) RFC 8941 structured fields; with
//! several policies the strictest wins. A malformed field is ignored
//! whole, as RFC 8941 asks. News older than what the schedule knows (the
//! answer to a call sent before the current pause, or before the call
//! whose quota set the pace) neither doubles the pause nor replaces the
//! quota; a `Retry-After` or pushback holds calls until the instant it
//! names whichever answer brings it, as the upstream's latest word.
//!
//! # Bounded waits
//!
//! A call waits at most until its [`Deadline`](crate::timeout::Deadline)
//! (exclusive: a call sent at its deadline has no time left) and at most
//! [`max_wait`](ThrottleLayer::max_wait) ([`DEFAULT_MAX_WAIT`]); a call that
//! would wait longer is refused at once with [`Error::Throttled`], whose
//! `retry_after` is the wait it would need. A waiting call that the
//! schedule pushes past its bound (a later `Retry-After`) leaves then, and
//! one that the calls ahead of it hold past its bound (a call first in line
//! that its caller keeps but no longer polls) leaves at that bound. The
//! maximum wait also caps what the upstream can ask: a `Retry-After` of ten
//! years pauses calls for the maximum wait, and a pace is one call per
//! maximum wait at the slowest. A waiting call dropped (a caller's own
//! timeout, a cancelled task) gives its place back at once.
//!
//! # The adaptive throttle
//!
//! [`ThrottleLayer::adaptive`] adds client-side throttling as the Google SRE
//! book describes it (chapter 21, "Handling Overload"): over the last two
//! minutes, with `requests` the calls attempted (including those rejected
//! here) and `accepts` those the upstream accepted, each call is rejected
//! locally with probability
//!
//! ```text
//! max(0, (requests - k * accepts) / (requests + 1))
//! ```
//!
//! as [`Error::Rejected`]. See [`AdaptiveThrottle`]. It is for an upstream
//! that refuses under load without saying when to come back.
//!
//! # HTTP
//!
//! [`Error`] implements `IntoProblem` (and, with feature `axum`,
//! `IntoResponse`): a refusal is a `503 Service Unavailable` of type
//! [`OVERLOADED`](crate::problem::types::OVERLOADED) with `Retry-After`, as
//! the service calling a throttled dependency is, for its own callers,
//! temporarily unable to answer.
//!
//! # Metrics and tracing
//!
//! With feature `metrics`, every call counts in
//! `palisade_throttle_calls_total{name, outcome}`, `outcome` being `sent`
//! (at once), `waited`, `throttled` or `rejected`, and each wait is a sample
//! of `palisade_throttle_wait_seconds{name}`. Every call is a `tracing`
//! event with `layer = "throttle"`, `name`, `outcome` and `latency_us` (the
//! wait): `sent` at `TRACE`, the others at `DEBUG`; a pause the upstream
//! asks for is a `DEBUG` event too. See [`crate::observability`].
//!
//! # Cost
//!
//! While the upstream holds nothing back, a call reads the clock once and
//! one atomic, and takes no lock; its answer is looked at for a handful of
//! header names and takes the lock only when it has something to teach.
//! Measured over a bare always-ready service (`benches/throttle.rs`): about
//! 100 ns a call (tower's `RateLimit`, for reference: about 30 ns), and
//! about 340 ns more when every answer carries a `RateLimit` field to parse
//! and learn: nothing next to an HTTP round trip. A waiting call allocates
//! its state and timer.
//!
//! # Not done
//!
//! - One schedule per layer: no per-key (per-host) schedules; build one layer
//!   per upstream.
//! - A gRPC status in the trailers (after messages) is not seen: only a
//!   trailers-only answer's, in the headers.
//! - A policy alone (`RateLimit-Policy` without a spent quota) does not pace:
//!   the quota left says more.
//! - `503` without `Retry-After` pauses nothing: an upstream that is down is
//!   the circuit breaker's business.

mod adaptive;
mod config;
pub mod error;
pub mod future;
mod headers;
mod layer;
mod observe;
mod schedule;
mod service;

pub use self::{
    adaptive::{AdaptiveThrottle, DEFAULT_K, DEFAULT_WINDOW},
    config::{DEFAULT_MAX_WAIT, DEFAULT_PAUSE},
    error::Error,
    layer::ThrottleLayer,
    service::Throttle,
};
pub use crate::attempt::ConfigError;
