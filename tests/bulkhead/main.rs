#![cfg(all(feature = "bulkhead", feature = "http", feature = "axum"))]
//! Bulkhead: permits per key, the wait queue (bound, priority, order), no
//! permit lost however a caller ends, the HTTP surface and (with feature
//! `redis`) the fleet-wide store, on one Redis and on a Redis Cluster.

#[path = "../support/mod.rs"]
mod support;

use std::num::NonZeroU32;

/// A count of permits.
pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a non-zero count")
}

#[cfg(feature = "redis")]
#[path = "../support/proxy.rs"]
mod proxy;

mod drop_safety;
mod http;
mod queue;
mod ready;
#[cfg(feature = "redis")]
mod redis;
mod reload;
