//! Bulkheads: at most N requests in flight, per key or in all, so one slow
//! feature cannot take every connection another one needs.
//!
//! [`BulkheadLayer`] holds a permit for each request while the inner
//! service runs it. Permits are counted per key ([`BulkheadLayer::per`]: a
//! route, a tenant, a downstream) or globally (the default). When a key has
//! none left, the request waits in its [`Queue`](crate::load_shed::Queue)
//! (bounded in length and in wait, served by priority and in the
//! [`QueueOrder`](crate::load_shed::QueueOrder) chosen) or, without a
//! queue, is refused at once with [`Error::Shed`]: over HTTP a `503` problem
//! of type [`OVERLOADED`](crate::problem::types::OVERLOADED) with
//! `Retry-After`. A permit is released when the response future ends,
//! however it ends, dropped at any await point included.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::bulkhead::{BulkheadLayer, Error};
//! use palisade::load_shed::{Queue, Reason};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two recommendation queries at once, a third waits up to 50 ms.
//! let layer = BulkheadLayer::new(NonZeroU32::new(2).unwrap())
//!     .queue(Queue::new(1, Duration::from_millis(50))?)
//!     .name("recommendations");
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, std::convert::Infallible>(ms)
//! }));
//!
//! let slow = (0..3).map(|_| svc.clone().oneshot(1_000)).collect::<Vec<_>>();
//! let slow = tokio::spawn(futures::future::join_all(slow));
//! tokio::task::yield_now().await;
//! // Two run, one waits: the fourth is refused at once.
//! let Err(Error::Shed(shed)) = svc.clone().oneshot(1).await else { panic!() };
//! assert_eq!(shed.reason, Reason::Full);
//! let done = slow.await?;
//! assert!(matches!(done[2], Err(Error::Shed(ref s)) if s.reason == Reason::Waited));
//! # Ok(()) }
//! ```
//!
//! # Change at run time
//!
//! [`BulkheadLayer::handle`] gives a [`Handle`] whose
//! [`set_max_in_flight`](Handle::set_max_in_flight) replaces the limit of
//! the layer, its clones and every service they built, for every key of
//! its namespace, without rebuilding the stack and without cancelling a
//! call. A higher limit lets queued requests in at once. A lower one takes
//! no permit back: the calls running finish, nobody is let in until fewer
//! than the new limit are in flight, and from then on at most the new limit
//! run at once. The queue is kept as it was built.
//!
//! ```
//! use std::num::NonZeroU32;
//! use palisade::bulkhead::BulkheadLayer;
//! use tower::{Layer, service_fn};
//!
//! let layer = BulkheadLayer::new(NonZeroU32::new(10).unwrap());
//! let limits = layer.handle(); // kept by the code that reloads the config
//! let svc = layer.layer(service_fn(|req: u32| async move {
//!     Ok::<_, std::convert::Infallible>(req)
//! }));
//! limits.set_max_in_flight(NonZeroU32::new(4).unwrap());
//! assert_eq!(limits.max_in_flight().get(), 4);
//! # drop(svc);
//! ```
//!
//! With a `RedisStore`, this process's waiters follow a new limit at once
//! and the fleet-wide limit is the one each lease request carries: give
//! every instance the same limit.
//!
//! # A limit across the fleet
//!
//! With feature `redis`, [`BulkheadLayer::with_store`] takes a `RedisStore`:
//! the limit then holds across every instance, for a downstream that allows
//! N concurrent calls in all (a partner API). See `RedisStore` for leases,
//! fencing and failures; [`OnStoreError`] says
//! what a Redis failure does (the bulkhead fails closed by default).
//!
//! # Metrics and tracing
//!
//! Every decision is one `tracing` event with the fields of
//! [`crate::observability`] (`layer = "bulkhead"`, `name`, the key as a
//! digest, `outcome`, and `priority`): admissions at `TRACE`, refusals at
//! `DEBUG`, store failures at `WARN`. With feature `metrics` it counts
//! `palisade_bulkhead_calls_total{name, outcome}` (`admitted`, `full`,
//! `waited`, `displaced`, `stale`, `failed_open`, `failed_closed`).

mod config;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod observe;
mod service;
pub mod store;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::store::{DEFAULT_LEASE, RedisPermit, RedisStore};
pub use self::{
    config::DEFAULT_RETRY_AFTER,
    error::Error,
    handle::Handle,
    layer::BulkheadLayer,
    service::Bulkhead,
    store::{DEFAULT_MAX_KEYS, MemoryStore, Store},
};
pub use crate::store::{OnStoreError, StoreError};
