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
//! Trip conditions, as in Resilience4j:
//! - [`consecutive_failures`](CircuitBreakerLayer::consecutive_failures) (the
//!   default: 5 in a row);
//! - a failure rate over a [`count_window`](CircuitBreakerLayer::count_window)
//!   (exactly the last N calls) or a
//!   [`time_window`](CircuitBreakerLayer::time_window) (the last N seconds,
//!   bucketed), once it holds [`minimum_calls`](CircuitBreakerLayer::minimum_calls);
//! - a [slow-call](CircuitBreakerLayer::slow_calls) rate.
//!
//! What counts as a failure is up to a [`Classify`] function (default: `Err`),
//! so a `5xx` response or a timeout can count and a `4xx` need not. A
//! [`Handle`] reads the state and metrics, streams [`Transition`]s and forces
//! states. [`KeyedCircuitBreakerLayer`] keeps one breaker per key (such as a
//! downstream host); [`FallbackLayer`] turns chosen errors into a fallback
//! response.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Error, State};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CircuitBreakerLayer::new()
//!     .consecutive_failures(NonZeroU32::new(2).unwrap())
//!     .open_wait(Duration::from_secs(10));
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
//! "circuit_breaker"`, `name` ([`CircuitBreakerLayer::name`], `"default"`
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
//! In the closed state with consecutive-failure or count-window tripping, a
//! call reads no clock and allocates nothing: one atomic load to admit it,
//! one to record a success (a short uncontended lock in count-window mode),
//! and the reference count of the shared breaker. On a 2-core machine that
//! adds roughly 20 ns per call (consecutive) and 30 ns (count window), a
//! fifth to a quarter of what failsafe's breaker adds (`benches/circuit_breaker.rs`).
//! Metrics and tracing keep to that: with feature `metrics` and no recorder
//! installed, counting a call adds about 2 ns (the look-up of the recorder in
//! force); an installed recorder adds its own cost, a map look-up by a
//! precomputed key and an atomic add for the common exporters. A disabled
//! `TRACE` level costs a load and a branch.
//! A time window reads the clock once per call and slow-call detection twice,
//! which costs more than the rest of the path: turn them on where they pay.
//! Time is `tokio::time::Instant` (as cheap as `std::time::Instant` outside
//! tests), so tests can pause it.

mod breaker;
mod classify;
mod config;
pub mod error;
mod fallback;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod observe;
mod service;
mod state;
mod window;

pub use self::classify::{Classify, ErrorIsFailure};
pub use self::config::{Config, InvalidRate, Rate};
pub use self::error::Error;
pub use self::fallback::{Fallback, FallbackFuture, FallbackLayer};
pub use self::handle::Handle;
pub use self::keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer, KeyedHandle};
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreaker;
pub use self::state::{Metrics, Outcome, Reason, State, Transition};
