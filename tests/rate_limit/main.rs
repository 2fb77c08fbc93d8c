#![cfg(all(feature = "rate-limit", feature = "http", feature = "axum"))]
//! Rate limit layer: GCRA against a model, the memory bound, the HTTP
//! surface, key extraction and (with feature `redis`) the Redis store, on
//! one Redis and on a Redis Cluster.

#[path = "../support/mod.rs"]
mod support;

use std::num::{NonZeroU32, NonZeroUsize};

/// A count of cells, for `Quota`.
pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a non-zero count")
}

/// A number of keys, for `MemoryStore::with_max_keys`.
pub(crate) fn nzu(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a non-zero number of keys")
}

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;

#[cfg(feature = "redis")]
#[path = "../support/proxy.rs"]
mod proxy;

#[cfg(feature = "redis")]
mod cluster;
mod contract;
mod events;
mod http;
mod keys;
mod memory;
mod metrics;
mod model;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_latency;
mod tiers;
