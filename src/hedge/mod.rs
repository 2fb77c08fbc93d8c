//! Hedged requests: a request slower than most gets a second attempt, and
//! the first answer wins.
//!
//! Most requests to a replicated service are fast; a few are slow for reasons
//! that have nothing to do with them (a garbage collection, a busy replica, a
//! lost packet). Dean and Barroso ("The Tail at Scale", CACM 2013) cut that
//! tail by sending a second copy of a request that has not answered within
//! the 95th percentile of latency: the copy usually lands somewhere fast,
//! for a few percent of extra load. [`HedgeLayer`] does that: once a request
//! has waited a [`percentile`](HedgeLayer::percentile) of the latencies of
//! the last [`window`](HedgeLayer::window), it sends a hedge (a copy), returns
//! the first answer and drops the other attempts, which cancels them.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use palisade::attempt::{ErrorIsRetryable, Replay};
//! use palisade::hedge::HedgeLayer;
//! use tokio::time::Instant;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! #[derive(Clone)]
//! struct GetUser(u64);
//!
//! impl Replay for GetUser {
//!     fn replay(&self) -> Option<Self> {
//!         Some(self.clone()) // a read: safe to send twice
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let users = service_fn(move |GetUser(id): GetUser| {
//!     // The 21st call lands on a stalled replica; the others take 5 ms.
//!     let stalled = calls.fetch_add(1, Ordering::Relaxed) == 20;
//!     async move {
//!         let work = if stalled { Duration::from_secs(1) } else { Duration::from_millis(5) };
//!         tokio::time::sleep(work).await;
//!         Ok::<_, std::io::Error>(format!("user {id}"))
//!     }
//! });
//! let layer = HedgeLayer::new(ErrorIsRetryable).percentile(0.95)?.name("users");
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(users);
//!
//! for id in 0..20 {
//!     svc.clone().oneshot(GetUser(id)).await?; // 20 latencies: enough to hedge
//! }
//! let delay = handle.delay().expect("20 samples");
//! assert!(delay >= Duration::from_millis(5) && delay < Duration::from_millis(6));
//!
//! let start = Instant::now();
//! assert_eq!(svc.clone().oneshot(GetUser(7)).await?, "user 7");
//! assert!(start.elapsed() < Duration::from_millis(20), "the hedge answered");
//! # Ok(()) }
//! ```
//!
//! # The delay
//!
//! Every first attempt's latency goes into a histogram of the last
//! [`window`](HedgeLayer::window) ([`DEFAULT_WINDOW`], 10 s, moving in four
//! steps): log-linear buckets of atomic counters, 1 µs wide below 64 µs and
//! at most 3.1% of their value above, so a 3.1 ms latency is not taken for
//! a 4 ms one. The delay is the window's
//! [`percentile`](HedgeLayer::percentile) ([`DEFAULT_PERCENTILE`], 0.95),
//! never less than [`min_delay`](HedgeLayer::min_delay); no hedge is sent
//! while the window holds fewer than [`min_samples`](HedgeLayer::min_samples)
//! latencies ([`DEFAULT_MIN_SAMPLES`], 20), so hedging starts on the 20th
//! answer, not a whole period later. It is computed again every 16 latencies
//! and when the window moves; [`HedgeHandle::delay`] shows it.
//!
//! Only first attempts are recorded, and a first attempt that a hedge beat
//! counts as the time it had run when it was dropped: at least the delay,
//! so it stays among the slow ones. So does a request the caller drops (a
//! timeout above, a client gone) once it has run past the delay; one
//! dropped sooner says nothing and is not recorded. Recording only the attempts that
//! answer would leave the slowest out and pull the delay down, and a hedge's
//! own latency only counts when it beat the first attempt, which biases
//! it the same way.
//!
//! # What is hedged
//!
//! A request is hedged only if it is [`Replay`](crate::attempt::Replay) and
//! gives a copy: with feature `http`, an `http::Request` with an idempotent
//! method, or with an `Idempotency-Key`, and a body held in memory
//! (`attempt::ReplayBody`). A `POST` without a key is sent once, and
//! counted as `not_replayable` if it would have been hedged otherwise (the
//! window holds enough latencies and the budget has tokens). A request with
//! a streaming body is not `Replay` at all: buffer it first, or the layer
//! does not build. A hedge goes through a clone of the inner service,
//! readied first: a service at its concurrency limit delays the hedge, and
//! the budget is not touched until it is ready.
//!
//! [`max_hedges`](HedgeLayer::max_hedges) ([`DEFAULT_MAX_HEDGES`], 1) bounds
//! the hedge decisions of one request, one delay apart: with 2, a request
//! whose first hedge is slow too gets another one, if the budget allows.
//!
//! # The race
//!
//! The first answer that the classifier calls
//! [`Verdict::Done`](crate::attempt::Verdict::Done) wins; the other
//! attempts are dropped at once. An answer worth another attempt
//! (`Retry`: a reset connection, a `503`) or a refusal on this side
//! (`Stop`: an open breaker below the hedge refusing the hedge) does not
//! end the race while another attempt is still running; when none is left,
//! the last such answer is returned, for a retry layer above to judge
//! (a refusal never replaces the downstream's own failure, whose status
//! and `Retry-After` the caller needs). No
//! task is spawned: the attempts are polled by the response future, and
//! dropping it drops them all.
//!
//! # The budget
//!
//! Hedges spend the [`Budget`](crate::attempt::Budget) of
//! [`budget`](HedgeLayer::budget) (by default a new `Budget::default()`): a
//! hedge takes one token, and is sent only if more than half the tokens are
//! left after it (a hedge refused costs nothing); every answer of
//! `Verdict::Done` earns a share. So hedges stay under the budget's token
//! ratio of successes (10% by default) whatever the latencies do, and stop
//! when the downstream is failing. Give the same budget to the
//! `RetryLayer` of the same downstream: retries and hedges then share one
//! allowance of extra load. A budget a retry layer holds is earned by the
//! retry alone (the hedge below it sees the same successes and only
//! spends), so each success counts once.
//!
//! # Where it goes in a stack
//!
//! ```text
//! RetryLayer             a failed request is sent again, after a backoff
//!   CircuitBreakerLayer  sees one outcome per request, refuses before any attempt
//!     HedgeLayer         a slow attempt gets a hedge
//!       TimeoutLayer     bounds each attempt, the hedges included
//!         client
//! ```
//!
//! Below the retry: each retry is hedged in turn, and a hedge never waits
//! out a backoff. Above the per-attempt timeout: a first attempt that times
//! out is a `Retry` answer, and a hedge still running can still win; a
//! timeout above the hedge would bound the request as a whole instead.
//!
//! # Compared with tower's `hedge`
//!
//! tower's `Hedge` records whole milliseconds rounded up (a 3.1 ms latency
//! is 4 ms, then a 4 ms sleep) behind a mutex, reads the percentile of the
//! previous period only (so nothing is hedged for the first period), hedges
//! every slow request with no budget, sends one hedge, and boxes errors.
//! This layer records microseconds to 3.1% in atomics, hedges from the
//! `min_samples`-th latency of a moving window, spends a budget shared with
//! retries, can hedge a hedge, knows which HTTP requests may be sent twice,
//! lets a running hedge answer after a retryable failure, keeps the error
//! type, and allocates nothing of its own for a request answered before its
//! delay (the copy of the request and the clone of the service aside, see
//! [Cost](#cost)).
//!
//! # Metrics and tracing
//!
//! With feature `metrics`: `palisade_hedge_calls_total{name, outcome}` per
//! request, by the attempt that answered (`primary`, `hedge`) or
//! `not_replayable`; `palisade_hedge_hedges_total{name, outcome}` per hedge
//! decision (`sent`, `budget_exhausted`); the gauge
//! `palisade_hedge_delay_seconds{name}`. Tracing events carry
//! `layer = "hedge"`, `name`, `outcome`, `attempt` and `latency_us`: a hedge
//! sent or refused at `DEBUG`, an answer at `TRACE`. See
//! [`crate::observability`].
//!
//! # Cost
//!
//! A request reads the clock at the call and at the answer. While a hedge
//! is possible (enough latencies, tokens in the budget, `max_hedges` above
//! 0) it also copies the request and clones the service at the call; a
//! first attempt that is not ready when first polled arms one timer. The
//! hedges' set is allocated only when a hedge is sent.

mod config;
pub mod error;
pub mod future;
mod layer;
mod observe;
mod service;
mod stats;

pub use self::{
    error::Error,
    layer::{
        DEFAULT_MAX_HEDGES, DEFAULT_MIN_DELAY, DEFAULT_MIN_SAMPLES, DEFAULT_PERCENTILE,
        DEFAULT_WINDOW, HedgeHandle, HedgeLayer,
    },
    service::Hedge,
};
pub use crate::attempt::ConfigError;
