#![cfg(all(feature = "idempotency", feature = "http"))]
#![allow(unreachable_pub)] // test helper modules share items with pub
//! Idempotency-Key layer: one execution per key, replay, conflicts,
//! cancellation, crashes, fencing; memory and Redis stores; client side.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;

mod client;
#[cfg(feature = "redis")]
mod cluster;
mod common;
mod errors;
mod events;
mod fingerprint;
mod grpc;
mod hangups;
mod limits;
mod memory;
mod metrics;
mod per_caller;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_hangups;
#[cfg(feature = "redis")]
mod replication;
mod request_body;
mod store_blips;
mod store_contract;
