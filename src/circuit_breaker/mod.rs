//! Circuit breaker: stop calling a dependency that is failing, fail fast
//! instead, and probe it again after a while.
//!
//! A [`CircuitBreakerLayer`] counts the outcomes of the calls it lets
//! through. While **closed**, every call passes. When the failures reach the
//! trip condition, the breaker **opens**: calls fail at once with
//! [`Error::Open`] (`503` with `Retry-After` over HTTP) and the inner service
//! is not touched. Once the open wait is over, the next call turns it
//! **half-open** (there is no timer task) and a few probe calls pass: if they
//! all succeed it closes, if one fails it opens again, with an optional
//! growing wait.
//!
//! Every setting is in a [`Config`], from which
//! [`CircuitBreakerLayer::new`] creates the breaker once; the layer's
//! [`handle`](CircuitBreakerLayer::handle) steers that one breaker, whenever
//! it is taken. Trip conditions, as in Resilience4j:
//! - [`consecutive_failures`](Config::consecutive_failures) (the
//!   default: 5 in a row);
//! - a failure rate over a [`count_window`](Config::count_window)
//!   (exactly the last N calls) or a
//!   [`time_window`](Config::time_window) (the last N seconds,
//!   bucketed), once it holds [`minimum_calls`](Config::minimum_calls);
//! - a [slow-call](Config::slow_calls) rate.
//!
//! What counts as a failure is up to a [`Classify`] function (default: `Err`),
//! so a `5xx` response or a timeout can count and a `4xx` need not. A
//! [`Handle`] reads the state and metrics, streams [`Transition`]s and forces
//! states. [`KeyedCircuitBreakerLayer`] keeps one breaker per key (such as a
//! downstream host); [`FallbackLayer`] turns chosen errors into a fallback
//! response.
//!
//! Every gRPC answer is an HTTP `200` whose status may come only in the
//! trailers, after the messages: `GrpcCircuitBreakerLayer` (feature `http`)
//! counts a gRPC call by its `grpc-status`, wherever it arrives, on a tonic
//! client or server.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Error, State};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CircuitBreakerLayer::new(
//!     Config::new()
//!         .consecutive_failures(NonZeroU32::new(2).unwrap())
//!         .open_wait(Duration::from_secs(10)),
//! );
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err("down") } else { Ok("ok") }
//!     }));
//!
//! for _ in 0..2 {
//!     assert!(matches!(svc.ready().await.unwrap().call(true).await, Err(Error::Inner("down"))));
//! }
//! assert_eq!(handle.state(), State::Open);
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! assert!(err.is_open());
//! # }
//! ```
//!
//! # Metrics and tracing
//!
//! With feature `metrics`, a breaker counts its calls in
//! `palisade_circuit_breaker_calls_total{name, outcome}` (`success`,
//! `failure`, `slow_success`, `slow_failure`, `ignored` as the [`Classify`]
//! function and the slow-call threshold decide, `rejected` when failed fast,
//! `disabled` when let through by a disabled breaker; a call whose future is
//! dropped unfinished is not counted), its state changes, forced ones
//! included, in `palisade_circuit_breaker_transitions_total{name, from, to}`,
//! and sets `palisade_circuit_breaker_state{name, state}` to 1 for its state
//! and 0 for the others when the layer builds its first service and on every
//! change (so install the recorder before building the stack). A
//! [`KeyedCircuitBreakerLayer`] records every key under its one `name` (a
//! label per key would grow without bound); its state gauge counts the keys
//! in each state.
//!
//! Every decision is a `tracing` event with the fields `layer =
//! "circuit_breaker"`, `name` ([`Config::name`], `"default"`
//! when unset), `outcome` and, for a keyed breaker, `key`: a digest of the
//! key (for a string key, [`redact_key`](crate::observability::redact_key)
//! of it), never the key. A finished call is logged at `TRACE` with `latency_us`, a
//! rejection at `DEBUG`, a state change at `WARN` when opening and `INFO`
//! otherwise (with `from`, `to`, the reason and the window's rates). The
//! clock is read for `latency_us` only while that `TRACE` event is enabled.
//! See [`crate::observability`] for every layer's names and labels.
//!
//! # Cost
//!
//! Which calls read a clock, exactly:
//! - **no clock**: a call admitted while closed (or forced closed, or
//!   disabled) with [`consecutive_failures`](Config::consecutive_failures) or
//!   [`count_window`](Config::count_window) tripping and no
//!   [`slow_calls`](Config::slow_calls), while the `TRACE` level is off;
//! - **one read**, when the call finishes: [`time_window`](Config::time_window)
//!   tripping (to place the call in its bucket);
//! - **two reads**, when the call starts and when it finishes:
//!   [`slow_calls`](Config::slow_calls) in any mode (a time window shares the
//!   second read), and any call while the `TRACE` level is on (for
//!   `latency_us`);
//! - off the closed path: a call refused or probed while open or half-open,
//!   a state change and a [`Handle::metrics`] read `tokio::time::Instant`.
//!
//! On the hot path the clock is the cheapest that follows tokio's paused time
//! where it can be paused: `tokio::time::Instant` (about 24 ns a read) in the
//! tests of a crate that builds tokio with `test-util`; with feature
//! `fast-clock`, everywhere else, the CPU's time-stamp counter through
//! `quanta` (a few nanoseconds).
//!
//! Otherwise a closed call allocates nothing: one atomic load to admit it,
//! one atomic update to record it (a short uncontended lock in the window
//! modes, which keep running counts, so a call costs no pass over the
//! window), and the reference count of the shared breaker. On a 2-core
//! machine that adds about a quarter of what failsafe's breaker adds with
//! consecutive-failure tripping, two fifths with a count window, and about
//! half with a time window or slow-call detection, where the clock reads
//! (about 10 ns each for the time-stamp counter of a virtual machine) are
//! most of the difference (`benches/circuit_breaker.rs`).
//! Metrics and tracing keep to that: with feature `metrics` and no recorder
//! installed, counting a call adds about 2 ns (the look-up of the recorder in
//! force); an installed recorder adds its own cost, a map look-up by a
//! precomputed key and an atomic add for the common exporters. A disabled
//! `TRACE` level costs a load and a branch.

#[cfg(feature = "http")]
mod body;
mod breaker;
mod classify;
mod clock;
mod config;
pub mod error;
mod fallback;
#[cfg(feature = "redis")]
mod fleet;
pub mod future;
#[cfg(feature = "http")]
mod grpc;
mod handle;
mod keyed;
mod layer;
mod observe;
mod service;
mod state;
mod window;

pub use self::classify::{Classify, ErrorIsFailure};
pub use self::config::{
    Config, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_PROBES,
    DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN_WAIT, DEFAULT_PROBE_TIMEOUT, InvalidRate, Rate,
};
pub use self::error::Error;
pub use self::fallback::{Fallback, FallbackFuture, FallbackLayer};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::fleet::{DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT, RedisFleet};
pub use self::handle::Handle;
pub use self::keyed::{
    DEFAULT_MAX_KEYS, KeyedCircuitBreaker, KeyedCircuitBreakerLayer, KeyedHandle, Unkeyed,
};
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreaker;
pub use self::state::{Metrics, Outcome, Reason, State, Transition};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::{
    body::GrpcBody,
    grpc::{GrpcCircuitBreaker, GrpcCircuitBreakerLayer, GrpcClassifier},
};
