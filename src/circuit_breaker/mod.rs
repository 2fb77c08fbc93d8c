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
//! client or server; it is shared across instances as the plain layer is.
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
//! # Reconfigure at run time
//!
//! [`Handle::set_config`] (and [`KeyedHandle::set_config`], for every key of
//! a keyed breaker) replaces a running breaker's settings, for a config
//! reload: from the next call on, it trips, waits and probes by the new
//! ones, on every service built from the layer and its clones. The state
//! stays:
//! - a closed breaker keeps its failure streak (at 3 failures of 5,
//!   lowered to 3, the next failure trips it; raised to 10, it needs 7
//!   more), and a window of the same kind and size keeps its counts, read
//!   under the new rates and minimum; a window of another kind or size
//!   (or the consecutive mode) starts empty;
//! - an open breaker keeps the wait it was given when it opened: a new
//!   [`open_wait`](Config::open_wait) or [`backoff`](Config::backoff)
//!   applies from its next trip (the trips in a row so far still count
//!   towards the backoff);
//! - a half-open breaker keeps its probes in flight and their deadlines,
//!   and needs [`half_open_probes`](Config::half_open_probes) of the new
//!   config to close (if its successful probes already reach that number,
//!   it closes at once); a new [`probe_timeout`](Config::probe_timeout)
//!   applies to the next probe.
//!
//! The [`name`](Config::name) cannot change (it labels the breaker's metrics
//! series and, shared, its Redis keys): a config with another name is
//! refused with [`InvalidConfig::Renamed`] and changes nothing. Forced
//! states stay. A shared breaker tells the fleet nothing of a new config:
//! each instance takes its own (the fleet's probe lease lasts the probe
//! timeout in force when it is taken), and the one transition a new config
//! can cause, closing on probes that already succeeded, is published as
//! any other. The settings the closed path reads are atomics of their own
//! (see [Cost](#cost)), so a closed call costs what it cost before.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Config};
//!
//! let config = Config::new().name("payments");
//! let layer = CircuitBreakerLayer::new(config.clone());
//! let handle = layer.handle();
//! // Later, from a reloaded file:
//! handle
//!     .set_config(
//!         config
//!             .consecutive_failures(NonZeroU32::new(10).unwrap())
//!             .open_wait(Duration::from_secs(5)),
//!     )
//!     .unwrap();
//! ```
//!
//! # Shared across instances
//!
//! With feature `redis`, [`CircuitBreakerLayer::shared`] shares a breaker
//! with the other instances of a service through one Redis
//! ([`RedisFleet`]): a dependency that fails for one instance is spared by
//! all of them, and only a few probes test it again, fleet-wide.
//!
//! ```no_run
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, Config, RedisFleet};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let fleet = RedisFleet::connect("redis://127.0.0.1:6379/")
//!     .await?
//!     .prefix("shop:")
//!     .poll_interval(Duration::from_secs(1));
//! // The same name on every instance: it names the breaker's keys.
//! let layer = CircuitBreakerLayer::new(
//!     Config::new()
//!         .name("payments")
//!         .consecutive_failures(NonZeroU32::new(5).unwrap())
//!         .half_open_probes(NonZeroU32::new(2).unwrap()),
//! )
//! .shared(fleet);
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! - **No round trip on the call path.** Each instance's breaker decides
//!   every call as an unshared one does (`poll_ready` and `call` never wait
//!   for Redis); a closed call costs what it costs without sharing. One
//!   background task per shared breaker (started by `shared` on the current
//!   runtime, or by the first service built inside one, and gone once the
//!   breaker's last layer, service and handle are dropped) does the Redis
//!   work.
//! - **Publishing.** When an instance's breaker trips, or its probe fails,
//!   the task writes "open until T" (T on Redis's clock) to the breaker's
//!   state in Redis and publishes it; when its probes succeed, "closed".
//!   Each change gets a growing epoch, so an instance applies a change once
//!   and never an older one. Forced states and resets through the
//!   [`Handle`] stay on their instance, and a forced or disabled breaker
//!   ignores the fleet.
//! - **Learning, and the bound.** The other instances learn a change from
//!   its message, one pub/sub hop after the write: the tests of
//!   `tests/circuit_breaker/shared.rs` measure 1 to 6 ms from the tripping
//!   call to every instance open, on loopback in a debug build, so add a
//!   network round trip or two. A message lost
//!   while a subscription was down is made up by polling: each task reads
//!   the state every [`poll_interval`](RedisFleet::poll_interval) (default
//!   1 s; one script call per breaker and interval), and subscribes again
//!   first when its subscription was lost. So a change reaches every
//!   instance that can reach Redis within one message, or at worst one
//!   poll interval plus a round trip. An instance that learns "open until
//!   T" opens until T ([`Reason::Fleet`]); "closed", it closes.
//! - **Probes, at most N fleet-wide.** When an instance's open wait is
//!   over, its next call is refused (as while a probe is deciding) and its
//!   task races the others for the fleet's probe lease: one Lua script
//!   takes it only if the fleet's breaker is open with its wait over (or
//!   half-open with the lease expired), and only for one instance. The
//!   winner turns half-open and probes as an unshared breaker does, with
//!   up to [`half_open_probes`](Config::half_open_probes) probes, which
//!   must all succeed; the others stay open until they learn the outcome
//!   (closed: they close; open again: they wait the new wait), or until the
//!   lease runs out. One instance probing for all, rather than N instances
//!   probing once each, keeps the probe rules of an unshared breaker (N
//!   successes close it, one failure opens it) in one place, and needs no
//!   count of outcomes in Redis. The lease lasts
//!   [`probe_timeout`](Config::probe_timeout): if the prober dies, another
//!   instance probes after that. A prober that got no call to probe with
//!   for a poll interval (the call that asked for the lease was refused)
//!   gives the lease back, so a quiet instance does not hold the fleet open.
//!   The lease is fenced by the prober's token: a prober whose lease ran
//!   out cannot close the fleet's breaker.
//! - **Redis outage.** A round trip that fails or takes longer than
//!   [`timeout`](RedisFleet::timeout) (default 250 ms) starts an outage:
//!   every instance decides alone, as an unshared breaker (it trips on its
//!   own failures and probes on its own), logs one `WARN` and counts one
//!   `palisade_circuit_breaker_fleet_outages_total{name}` (feature
//!   `metrics`). Every poll interval it tries again; when Redis answers, it
//!   subscribes again, reads the fleet's state and re-joins (an `INFO`
//!   event): a breaker that opened alone during the outage opens the fleet
//!   for the rest of its wait; otherwise the fleet's state applies.
//! - **Keys.** `<prefix>circuit_breaker:{<name>}:state` (a hash: `state`,
//!   `until`, `epoch`), `…:probe` (the lease, with the prober's token) and
//!   the channel `<prefix>circuit_breaker:{<name>}`; the prefix defaults to
//!   `palisade:`, the name is [`Config::name`].
//!
//! Not covered: a Redis Cluster (one Redis only; pub/sub would carry across
//! a cluster, but the subscriber connection is to one node and is not moved
//! when that node fails), keyed breakers ([`KeyedCircuitBreakerLayer`]),
//! and sharing the window's counts: each
//! instance trips on its own calls, and the fleet follows the first that
//! trips. In the rare race where a prober's lease runs out while its probes
//! are still in flight, another instance may start probing before the first
//! learns it lost the lease: up to 2N probes, once.
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
//! The settings a closed call reads (the consecutive threshold, the
//! slow-call threshold, whether to read the clock) are atomics of their own
//! that [`Handle::set_config`] stores into, loaded `Relaxed`: plain loads.
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
    DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN_WAIT, DEFAULT_PROBE_TIMEOUT, InvalidConfig, InvalidRate,
    Rate,
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
