//! Bounds how long a call may take, with per-request deadlines that travel
//! with the request.
//!
//! A slow dependency without a timeout holds every request that reaches it,
//! and the requests pile up until the service falls over. [`TimeoutLayer`]
//! fails a call with [`Error::Elapsed`] (carrying the budget) once its budget
//! runs out, and drops the inner future so its work stops.
//!
//! ```
//! use std::time::Duration;
//! use palisade::timeout::{Error, TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let slow = service_fn(|_: &str| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     Ok::<_, std::convert::Infallible>("late")
//! });
//! let svc = ServiceBuilder::new().layer(TimeoutLayer::internal()).service(slow);
//! let err = svc.oneshot("GET /stock").await.unwrap_err();
//! assert!(matches!(err, Error::Elapsed { budget } if budget == Duration::from_secs(3)));
//! # }
//! ```
//!
//! # Defaults
//!
//! [`INTERNAL_TIMEOUT`] (3 s, [`TimeoutLayer::internal`]) suits calls to the
//! services you run; [`EXTERNAL_TIMEOUT`] (10 s, [`TimeoutLayer::external`])
//! suits third-party APIs and a server's own budget per request.
//!
//! # Per-request budgets and propagation
//!
//! [`TimeoutLayer::per_request`] makes the layer's timeout a maximum: a
//! [`Deadline`] in the request (and, with feature `http`, a
//! `REQUEST_TIMEOUT` header in milliseconds, clamped to the maximum) can
//! shorten it. The deadline applied is left in the request, so a handler reads
//! what is left with [`Deadline::remaining`] and hands it to its outgoing
//! requests: a client stack with its own per-request timeout then uses the
//! smaller of its timeout and the time left, and `Deadline::write_header`
//! forwards it to the next service.
//!
//! ```
//! # #[cfg(feature = "axum")] mod example {
//! use std::time::Duration;
//! use axum::{Extension, Router, routing::get};
//! use palisade::{problem::ProblemLayer, timeout::{Deadline, TimeoutLayer}};
//! use tower::ServiceBuilder;
//!
//! async fn handler(Extension(deadline): Extension<Deadline>) -> String {
//!     let mut outgoing = http::Request::new(());
//!     outgoing.extensions_mut().insert(deadline); // a client stack honours it
//!     deadline.write_header(outgoing.headers_mut()); // the next server too
//!     format!("{} ms left", deadline.remaining().as_millis())
//! }
//!
//! pub fn app() -> Router {
//!     Router::new().route("/", get(handler)).layer(
//!         ServiceBuilder::new()
//!             .layer(ProblemLayer::new()) // Elapsed -> 504 problem+json
//!             .layer(TimeoutLayer::new(Duration::from_secs(10)).per_request()),
//!     )
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! # Change at run time
//!
//! [`TimeoutLayer::handle`] gives a [`Handle`] that replaces the timeout of
//! the layer, its clones and every service they built, without rebuilding
//! the stack: from the next call on, the layer's timeout (for a
//! per-request timeout, the maximum) is the new one; a call already running
//! keeps the deadline it got when it was made. A call reads the timeout with
//! one atomic load.
//!
//! ```
//! use std::time::Duration;
//! use palisade::timeout::{Error, TimeoutLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = TimeoutLayer::new(Duration::from_secs(3));
//! let timeouts = layer.handle(); // kept by the code that reloads the config
//! let svc = layer.layer(service_fn(|_: &str| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     Ok::<_, std::convert::Infallible>("late")
//! }));
//!
//! timeouts.set_timeout(Duration::from_millis(500));
//! let err = svc.oneshot("GET /stock").await.unwrap_err();
//! assert!(matches!(err, Error::Elapsed { budget } if budget == Duration::from_millis(500)));
//! # }
//! ```
//!
//! # HTTP
//!
//! With feature `http`, [`Error`] implements
//! `IntoProblem`: `Elapsed` answers `504 Gateway
//! Timeout` as `application/problem+json` with a `budget_ms` member; with
//! `axum` it is also an `IntoResponse`. A client stack keeps the typed error.
//!
//! # gRPC
//!
//! With feature `grpc`, a per-request timeout reads a gRPC request's budget
//! (one whose `content-type` is gRPC, see [`grpc::is_grpc`](crate::grpc::is_grpc))
//! from [`grpc-timeout`](crate::grpc::GRPC_TIMEOUT) instead of the HTTP
//! header, clamped to its timeout alike, and with `forward_header(true)`
//! writes the budget left as `grpc-timeout`
//! ([`Deadline::write_grpc_timeout`] does it by hand). A malformed
//! `grpc-timeout` is refused with [`Error::InvalidBudget`] without calling the
//! inner service: `ProblemLayer` answers it `INVALID_ARGUMENT`, and
//! [`Error::Elapsed`] `DEADLINE_EXCEEDED`.
//!
//! # Metrics and tracing
//!
//! With feature `metrics`, every call counts in
//! `palisade_timeout_calls_total{name, outcome}`, `outcome` being
//! `completed` (the inner service answered, `Ok` or `Err`, within the budget)
//! or `timed_out`. Every call is also a `tracing` event with the fields
//! `layer = "timeout"`, `name`, `outcome` and `latency_us`: a timeout at
//! `DEBUG` (its `latency_us` is the budget that ran out), a completed call at
//! `TRACE`. [`TimeoutLayer::name`] sets the `name`; see
//! [`crate::observability`] for every layer's names and labels.
//!
//! # Cost
//!
//! A call reads the clock once, since the budget counts from the call (as
//! tower's `Timeout` does: the inner service may have started work that runs
//! however late its future is polled), and creates no timer until its future
//! is first polled, and then only if the inner future is not ready: an
//! answer that is already there pays for no timer, where tower's `Timeout`
//! creates one on every call. A per-request timeout also reads the clock
//! //! once at the call, since its deadline travels with the request and counts
//! from there, and arms its timer at that deadline, again only if the inner
//! future is not ready at once. On `http::Request` it also writes the
//! `Deadline` into the extensions (an allocation), a few hundred nanoseconds
//! that an HTTP request does not notice; it skips the write when the request
//! already carries that deadline, as in a nested stack. Feature `metrics`
//! adds about 2 ns per call while no recorder is installed.

mod config;
mod deadline;
pub mod error;
pub mod future;
mod handle;
#[cfg(feature = "http")]
mod http;
mod layer;
mod observe;
mod service;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::{REQUEST_TIMEOUT, parse_budget};
pub use self::{
    config::{EXTERNAL_TIMEOUT, Fixed, INTERNAL_TIMEOUT, PerRequest},
    deadline::{Deadline, DeadlineRequest},
    error::Error,
    handle::Handle,
    layer::TimeoutLayer,
    service::Timeout,
};
