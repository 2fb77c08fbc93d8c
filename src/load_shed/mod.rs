//! Load shedding: which request a saturated gate refuses, and in what order
//! it serves the ones that wait.
//!
//! Shedding is a decision of the gate that owns the permits and the queue,
//! so there is no separate shedding layer: the [bulkhead](crate::bulkhead)
//! and the [adaptive limiter](crate::adaptive_concurrency) both take the
//! settings of this module.
//!
//! - A [`Queue`] bounds how many requests wait and for how long; without
//!   one, a saturated gate refuses at once. A wait that could outlast the
//!   stack's request timeout is refused when the queue is built
//!   ([`Queue::within`]).
//! - A [`Priority`] from a [`PriorityExtractor`] (a closure, or
//!   [`PriorityHeader`] over HTTP) orders the queue: `Critical` before
//!   `Normal` before `Sheddable`, and when the queue is full a newcomer of a
//!   higher class displaces the newest waiter of the lowest class, so the
//!   lowest class is always shed first. `NeverShed` (health and admin routes)
//!   bypasses the gate.
//! - [`QueueOrder`] picks FIFO, or adaptive LIFO with a [`CoDel`] queue
//!   timeout (Facebook's "Fail at Scale"); its docs say when to use which.
//!
//! A refused request fails with [`Shed`], saying [why](Reason); over HTTP it
//! is a `503` problem of type [`OVERLOADED`](crate::problem::types::OVERLOADED)
//! with `Retry-After`.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade::bulkhead::BulkheadLayer;
//! use palisade::load_shed::{Priority, Queue, QueueOrder};
//!
//! let queue = Queue::new(64, Duration::from_millis(50))?
//!     .order(QueueOrder::AdaptiveLifo(Default::default()));
//! let layer = BulkheadLayer::new(NonZeroU32::new(32).unwrap())
//!     .queue(queue)
//!     .priority(|path: &&str| if path.starts_with("/health") {
//!         Priority::NeverShed
//!     } else {
//!         Priority::Normal
//!     });
//! # let _ = layer;
//! # Ok::<(), palisade::load_shed::ConfigError>(())
//! ```

pub(crate) mod gate;
mod priority;
mod queue;
mod shed;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::priority::PriorityHeader;
pub use self::{
    priority::{Priority, PriorityExtractor, Uniform},
    queue::{
        CoDel, ConfigError, DEFAULT_CODEL_INTERVAL, DEFAULT_CODEL_TARGET, MAX_QUEUED, Queue,
        QueueOrder,
    },
    shed::{Reason, Shed},
};
