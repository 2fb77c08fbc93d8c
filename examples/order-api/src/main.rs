//! A demo order API with palisade's layers composed the way a backend uses
//! them: `cargo run --example order_api`, then see `/openapi.json`.
//!
//! The modules follow the usual backend split:
//!
//! - API: `routes` (router, handlers, bodies), `validation`, `errors`
//!   (RFC 9457 problems), `openapi`, and `layers`, the one place where every
//!   middleware is configured, in order;
//! - service: `service` (pricing, payment, storage), `domain` (types that
//!   refuse bad values);
//! - repository: `repository` (memory, or PostgreSQL with `DATABASE_URL`);
//! - infrastructure: `clients` (payment and recommendations client stacks),
//!   `faults` (the in-process fake downstreams), `config`, `server`, `state`,
//!   `telemetry` (the metrics recorder behind `/metrics`).

mod clients;
mod config;
mod domain;
mod errors;
mod faults;
mod layers;
mod openapi;
mod repository;
mod routes;
mod server;
mod service;
mod state;
mod telemetry;
mod validation;

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), palisade::BoxError> {
    server::init_tracing();
    let config = config::Config::from_env()?;
    let listener = TcpListener::bind(config.addr).await?;
    let local = listener.local_addr()?;
    let state = server::build_state(config, local).await?;
    tracing::info!(addr = %local, "order API listening on http://{local}");
    server::serve(listener, state, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
