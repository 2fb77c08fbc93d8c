//! palisade on tonic: an edge gRPC server, with palisade's layers on its
//! server stack and around the `Channel` it calls a backend through.
//!
//! ```text
//! client --grpc--> edge (ProblemLayer, timeout, rate limit, idempotency, bulkhead)
//!                    |  Inventory handler: forwards the call
//!                    +--grpc--> (ProblemLayer, timeout forwarding, retry, breaker, Channel)
//!                                 --> backend (the real Inventory)
//! ```
//!
//! [`backend::serve`] and [`edge::serve`] start each server on a listener
//! of your choice (tests bind `127.0.0.1:0`); every rejection reaches the
//! client as a gRPC status, never as an HTTP error.

pub mod backend;
pub mod edge;

/// The generated messages, client and server of `proto/inventory.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("inventory.v1");
}

/// Metadata the backend reads to answer late, in milliseconds: how the
/// example (and its tests) make a slow backend.
pub const DELAY_MS: &str = "x-delay-ms";

/// Metadata that makes the backend answer with this gRPC status code
/// instead (`14` is `UNAVAILABLE`): how the tests make a backend fail while
/// it is up.
pub const FAIL_CODE: &str = "x-fail-code";
