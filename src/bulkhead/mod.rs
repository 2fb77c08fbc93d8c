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
    layer::BulkheadLayer,
    service::Bulkhead,
    store::{DEFAULT_MAX_KEYS, MemoryStore, Store},
};
pub use crate::store::{OnStoreError, StoreError};
