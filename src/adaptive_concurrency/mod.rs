//! Adaptive concurrency: a concurrency limit that follows measured latency,
//! for a service whose capacity is unknown or changes (autoscaled
//! dependencies, noisy neighbours, a cache gone cold).
//!
//! [`AdaptiveConcurrencyLayer`] is a [bulkhead](crate::bulkhead) whose limit
//! moves: every request holds a permit while the inner service runs it, and
//! every request that completes teaches an [`Algorithm`] how long it took
//! (from admission to response: the time it waited in the queue is the
//! limiter's, not the service's) and whether it failed. When the algorithm
//! moves the limit, the gate's limit follows at once. Requests over the
//! limit wait in a [`Queue`](crate::load_shed::Queue) (bounded, served by
//! priority in the [`QueueOrder`](crate::load_shed::QueueOrder) chosen) or,
//! without one, are refused at once with [`Error::Shed`]: over HTTP a `503`
//! problem of type [`OVERLOADED`](crate::problem::types::OVERLOADED) with
//! `Retry-After`. A permit is released when the response future ends,
//! however it ends, dropped at any await point included.
//!
//! ```
//! use std::time::Duration;
//! use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd};
//! use palisade::load_shed::Queue;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Slower than 100 ms means overloaded: back off.
//! let aimd = Aimd::new()
//!     .bounds(1, 10, 200)?
//!     .latency_threshold(Duration::from_millis(100));
//! let layer = AdaptiveConcurrencyLayer::new(aimd)
//!     .queue(Queue::new(32, Duration::from_millis(20))?)
//!     .name("inventory");
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, std::convert::Infallible>(ms)
//! }));
//!
//! assert_eq!(svc.clone().oneshot(10).await?, 10);
//! // Slow answers back off: the limit drops below its start.
//! let slow = (0..10).map(|_| svc.clone().oneshot(500));
//! futures::future::join_all(slow).await;
//! assert!(handle.limit() < 10);
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(()) }
//! ```
//!
//! # When to use which algorithm
//!
//! - [`Gradient2`] (Netflix's `Gradient2Limit`) needs no threshold: it
//!   learns the service's usual latency and shrinks the limit when requests
//!   get slower than `tolerance` times that. Pick it for a dependency whose
//!   latency is stable when healthy and grows with queueing (databases,
//!   most RPC services). It learns from latency only. For a tight latency
//!   objective, a lower tolerance and a short queue: in the overload bench
//!   (`benches/README.md`), `tolerance(1.2)` with a 16-deep, 3 ms adaptive
//!   LIFO queue kept goodput at 99.6-100.7% of capacity from 1.1x to 3x
//!   load with p99 within 10 ms of the unloaded p99; the default 1.5 lets
//!   the service's own queue grow to half its service time.
//! - [`Aimd`] backs off on errors and on latency above a threshold you
//!   give. Pick it when overload shows as errors (timeouts, `503`s), when
//!   the latency varies too much by request for a learnt baseline to mean
//!   anything, or when an SLO gives the threshold.
//! - Neither, a fixed [bulkhead](crate::bulkhead), when the capacity is
//!   known and steady: nothing to learn, nothing to get wrong.
//!
//! Vegas is left out: it needs the no-load latency, which a busy service
//! never shows, and where Gradient2's long-term average stands in for it
//! Vegas would add nothing.
//!
//! # Metrics and tracing
//!
//! Every decision is one `tracing` event with the fields of
//! [`crate::observability`] (`layer = "adaptive_concurrency"`, `name`,
//! `outcome`, and `priority`): admissions at `TRACE`, refusals at `DEBUG`.
//! A limit change is one `DEBUG` event with `limit` and `previous`. With
//! feature `metrics` it counts
//! `palisade_adaptive_concurrency_calls_total{name, outcome}` (`admitted`,
//! `full`, `waited`, `displaced`, `stale`) and sets the gauge
//! `palisade_adaptive_concurrency_limit{name}` on each change.

mod aimd;
mod algorithm;
mod config;
pub mod error;
mod gradient2;
mod handle;
mod layer;
mod observe;
mod service;

pub use self::{
    aimd::{Aimd, DEFAULT_BACKOFF, DEFAULT_LATENCY_THRESHOLD},
    algorithm::{Algorithm, DEFAULT_INITIAL_LIMIT, DEFAULT_MAX_LIMIT, DEFAULT_MIN_LIMIT, Sample},
    config::DEFAULT_RETRY_AFTER,
    error::Error,
    gradient2::{
        DEFAULT_LONG_WINDOW, DEFAULT_MIN_WINDOW, DEFAULT_SMOOTHING, DEFAULT_TOLERANCE,
        DEFAULT_WARMUP, Gradient2,
    },
    handle::Handle,
    layer::AdaptiveConcurrencyLayer,
    service::AdaptiveConcurrency,
};
