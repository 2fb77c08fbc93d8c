//! The demo order API as a library: [`app`] is the whole router, the
//! binary (`src/main.rs`) wires it from the environment and serves it, and
//! the tests and the bench start it in-process.
//!
//! A demo order API with palisade's layers composed the way a backend uses
//! them: `cargo run -p order-api`, then see `/openapi.json`.
//!
//! The modules follow the usual backend split:
//!
//! - API: `routes` (router, handlers, bodies), `validation`, `errors`
//!   (RFC 9457 problems), `openapi`, and `layers`, the one place where every
//!   middleware is configured, in order;
//! - service: `service` (pricing, payment, storage; recommendations),
//!   `domain` (types that refuse bad values);
//! - repository: `repository` (memory, or PostgreSQL with `DATABASE_URL`;
//!   a bounded pool of connections, reached through bulkheads: orders, and
//!   recommendations, a catalogue query);
//! - infrastructure: `clients` (the payment client stack), `faults` (the
//!   in-process fake payment provider, and the faults of recommendations
//!   queries), `config`, `server`, `state`,
//!   `telemetry` (the metrics recorder behind `/metrics`).

pub mod clients;
pub mod config;
pub mod domain;
pub mod errors;
pub mod faults;
pub mod layers;
pub mod openapi;
pub mod repository;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod validation;

pub use routes::app;
