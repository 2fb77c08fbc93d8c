#![cfg(feature = "bulkhead")]
//! Bulkhead layer: (with feature `redis`) the fleet-wide store, on one Redis
//! and on a Redis Cluster.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "redis")]
#[path = "../support/proxy.rs"]
mod proxy;

#[cfg(feature = "redis")]
mod redis;
