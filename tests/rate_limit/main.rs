#![cfg(all(feature = "rate-limit", feature = "http", feature = "axum"))]
//! Rate limit layer: GCRA against a model, the memory bound, the HTTP
//! surface, key extraction and (with feature `redis`) the Redis store, on
//! one Redis and on a Redis Cluster.

#[path = "../support.rs"]
mod support;

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
