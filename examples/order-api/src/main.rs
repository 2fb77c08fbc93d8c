//! The order API: `cargo run -p order-api`, then see `/openapi.json`.
//! Configured from the environment (see `order_api::config`).

use order_api::{config, server};
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
