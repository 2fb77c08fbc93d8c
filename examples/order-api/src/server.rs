//! Start-up and shutdown: wiring the state from the configuration, serving
//! with graceful shutdown, logging.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use metrics_exporter_prometheus::PrometheusHandle;
use palisade::BoxError;
use tokio::net::TcpListener;

use crate::clients::{PaymentClient, http_client};
use crate::config::Config;
use crate::layers;
use crate::repository::Repository;
use crate::state::{AppState, Stores};

/// The table orders live in, in PostgreSQL.
pub const ORDERS_TABLE: &str = "orders";

/// Builds the state for an instance listening on `local`: the repository
/// `config` asks for, and a client of the payment provider (`PAYMENT_URL`,
/// else this instance's fake).
///
/// Metrics go to the process's recorder ([`crate::telemetry::prometheus`]),
/// installed here before any layer records, so no early sample is lost.
pub async fn build_state(config: Config, local: SocketAddr) -> Result<AppState, BoxError> {
    let metrics = crate::telemetry::prometheus().clone();
    let repository = match &config.database_url {
        Some(url) => {
            let repo = Repository::postgres(url, ORDERS_TABLE).await?;
            tracing::info!(table = ORDERS_TABLE, "orders stored in PostgreSQL");
            repo
        }
        None => {
            tracing::info!("orders stored in memory");
            Repository::memory()
        }
    };
    build_state_with(config, local, repository, metrics).await
}

/// [`build_state`] with a repository and a metrics recorder of the caller's
/// choosing: `metrics` is the handle of the recorder the layers record into
/// (the global one, or the thread's local one in tests).
pub async fn build_state_with(
    config: Config,
    local: SocketAddr,
    repository: Repository,
    metrics: PrometheusHandle,
) -> Result<AppState, BoxError> {
    let stores = Stores::connect(config.redis_url.as_deref()).await?;
    match stores {
        Stores::Redis(_) => tracing::info!("rate limits and idempotency keys kept in Redis"),
        Stores::Memory => tracing::info!("rate limits and idempotency keys kept in memory"),
    }
    let own = own_base_url(local);
    let payment_url = config
        .payment_url
        .clone()
        .unwrap_or_else(|| format!("{own}/fake/payments"));
    let (payment_stack, payment_breaker, handles) = layers::payment_stack(&config, http_client());
    tracing::info!(%payment_url, "payment provider");
    let payment = PaymentClient::new(payment_stack, payment_url, payment_breaker);
    Ok(AppState::new(
        config, repository, payment, stores, metrics, handles,
    ))
}

/// How this instance reaches itself: a wildcard address becomes loopback.
pub fn own_base_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

/// Serves until `shutdown` completes, then stops accepting and waits for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::routes::app(state.clone());
    // Once the routes (and their layers) are built.
    state.watch_config().map_err(std::io::Error::other)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: finishing requests in flight"),
        () = terminate => tracing::info!("SIGTERM: finishing requests in flight"),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only
/// on a terminal.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
