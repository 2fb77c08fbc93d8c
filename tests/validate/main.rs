//! Tests of the validate layer: every status path with its exact problem
//! body, pointers, limits, hostile JSON, and a property test of the JSON path.
#![cfg(all(feature = "validate", feature = "http", feature = "axum"))]

#[allow(unreachable_pub)]
mod common;
mod hostile;
mod layer;
mod metrics;
mod props;
#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;
