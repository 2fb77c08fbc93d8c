//! Shared application state and the counters behind `/admin/stats`.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::PrometheusHandle;
use palisade::config::{Handles, Reloader};
use palisade::rate_limit;
use serde::Serialize;

use crate::clients::PaymentClient;
use crate::config::Config;
use crate::faults::{FakePayments, Faults};
use crate::layers;
use crate::repository::Repository;
use crate::service::{OrderService, Recommendations};

/// What every handler can reach, behind one `Arc`: axum clones the state
/// with the handler service on every request, and layers in front of a
/// handler clone their inner service, so a clone is one reference count, not
/// one per part. Derefs to [`Parts`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Parts>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Parts {
    pub config: Config,
    pub orders: OrderService,
    pub recommendations: Recommendations,
    /// Shared with the recommendations queries, which it slows or fails.
    pub faults: Arc<Faults>,
    pub fake_payments: FakePayments,
    /// The recorder palisade's layers and the request metrics record into:
    /// `/metrics` renders it, `/admin/stats` counts rejections in it.
    pub metrics: PrometheusHandle,
    /// Where the rate-limit and idempotency layers keep their state.
    pub stores: Stores,
    /// The handles of the layers a config file may change, by the name of
    /// their section (`api`, `payment`); the routes add theirs as they are
    /// built.
    pub handles: Mutex<Handles>,
    /// The quotas of the `api` rate limit, as `/admin/config` shows them.
    pub api_quotas: OnceLock<rate_limit::Handle>,
    /// The reloader of `ORDER_API_CONFIG`, once it is loaded.
    pub reloader: OnceLock<Arc<Reloader>>,
}

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// Where the layers of `layers.rs` keep their state.
#[derive(Clone)]
pub enum Stores {
    /// In this process: limits and keys are per instance.
    Memory,
    /// In Redis (`REDIS_URL`): instances sharing it share limits and keys.
    Redis(redis::aio::ConnectionManager),
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stores::Memory => "Memory",
            Stores::Redis(_) => "Redis",
        })
    }
}

impl Stores {
    /// Redis when `url` is set (connecting now, so a wrong URL stops the
    /// start), else memory.
    ///
    /// One connection from [`palisade::redis_conn::connect`], shared by both
    /// stores. It comes back on its own after Redis does: reconnect attempts
    /// back off to at most 500 ms apart (redis-rs doubles the wait up to
    /// seconds by default, so an instance could stay on `503` for seconds
    /// after Redis returned), and one that hangs gives up after a second.
    /// Requests meanwhile fail at the stores' own timeouts: the rate limit
    /// lets them through, idempotency answers `503`.
    pub async fn connect(url: Option<&str>) -> Result<Self, redis::RedisError> {
        let Some(url) = url else {
            return Ok(Stores::Memory);
        };
        let conn = palisade::redis_conn::connect(url).await?;
        Ok(Stores::Redis(conn))
    }
}

impl AppState {
    /// The recorder of this instance; see [`Parts::metrics`].
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }

    /// Wires the state from its parts: `repository` gets a pool of
    /// `config.db_pool_size` connections of its own, reached through the
    /// bulkheads of `layers.rs` (orders, and recommendations, which are a
    /// query of the repository too).
    pub fn new(
        config: Config,
        repository: Repository,
        payment: PaymentClient,
        stores: Stores,
        metrics: PrometheusHandle,
        handles: Handles,
    ) -> Self {
        let repository = repository.with_pool_size(config.db_pool_size);
        let faults = Arc::new(Faults::default());
        let (orders_db, orders_bulkhead) = layers::orders_db(&config, repository.clone());
        let (recommendations_db, breaker, recommendations_bulkhead) =
            layers::recommendations_db(&config, repository.clone(), faults.clone());
        // What a config file may change besides the caller's own handles:
        // `[bulkhead.orders]`, `[bulkhead.recommendations]`.
        let handles = handles
            .bulkhead(layers::ORDERS, orders_bulkhead)
            .bulkhead(layers::RECOMMENDATIONS, recommendations_bulkhead);
        Self(Arc::new(Parts {
            orders: OrderService::new(repository, orders_db, payment),
            recommendations: Recommendations::new(recommendations_db, breaker),
            config,
            faults,
            fake_payments: FakePayments::default(),
            metrics,
            stores,
            handles: Mutex::new(handles),
            api_quotas: OnceLock::new(),
            reloader: OnceLock::new(),
        }))
    }

    /// Adds a layer's handle to those a config file changes.
    pub fn register(&self, add: impl FnOnce(Handles) -> Handles) {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        *handles = add(std::mem::take(&mut *handles));
    }

    /// Loads `ORDER_API_CONFIG`, if set, into the layers built so far, and
    /// reloads it on a change or `SIGHUP` from then on. Call it once the
    /// routes are built.
    pub fn watch_config(&self) -> Result<(), palisade::config::Error> {
        let Some(path) = &self.config.config_file else {
            return Ok(());
        };
        let handles = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let reloader = Arc::new(Reloader::new(path, handles).env_prefix("ORDER_API"));
        reloader.load()?;
        tracing::info!(path = %path.display(), "palisade config loaded; reloaded on change or SIGHUP");
        let _watch = reloader.clone().spawn();
        let _ = self.reloader.set(reloader);
        Ok(())
    }
}

/// The `rejections` member of `/admin/stats`: what palisade's layers turned
/// away, read from the counters they record (see `palisade::observability`)
/// in this instance's recorder, by the names `layers.rs` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RejectionCounts {
    /// `429`s of the rate limit (`api`).
    pub rate_limited: u64,
    /// Requests refused by validation (`orders`: 400, 413, 415, 422), and by
    /// the idempotency layer for a missing or malformed key (400).
    pub validation: u64,
    /// `409`s: the key's first request was still running.
    pub idempotency_conflict: u64,
    /// `422`s: the key was used with another body.
    pub idempotency_mismatch: u64,
    /// Calls a circuit breaker (`payment`, `recommendations`) refused.
    pub breaker_open: u64,
    /// Downstream attempts that timed out (`payment`, each retry counted,
    /// and `recommendations`).
    pub timeout: u64,
    /// Order queries the `orders` bulkhead refused (`503`).
    pub orders_shed: u64,
    /// Recommendations queries the `recommendations` bulkhead refused
    /// (a degraded page).
    pub recommendations_shed: u64,
}

impl RejectionCounts {
    /// Reads the counts from `metrics`, the recorder the layers record into.
    pub fn read(metrics: &PrometheusHandle) -> Self {
        use palisade::observability::{
            BULKHEAD_CALLS, CIRCUIT_BREAKER_CALLS, IDEMPOTENCY_REQUESTS, RATE_LIMIT_DECISIONS,
            TIMEOUT_CALLS, VALIDATION_REJECTIONS,
        };
        let text = metrics.render();
        let sum = |metric: &str, labels: &[(&str, &str)]| counter_sum(&text, metric, labels);
        let idempotency = |outcome| {
            sum(
                IDEMPOTENCY_REQUESTS,
                &[("name", layers::ORDERS), ("outcome", outcome)],
            )
        };
        let downstreams = |metric: &str, outcome| {
            [layers::PAYMENT, layers::RECOMMENDATIONS]
                .iter()
                .map(|name| sum(metric, &[("name", name), ("outcome", outcome)]))
                .sum()
        };
        // Every outcome of a bulkhead but `admitted` and `failed_open` is a
        // refusal (a memory store never fails).
        let shed = |name| {
            ["full", "waited", "displaced", "stale", "failed_closed"]
                .iter()
                .map(|outcome| sum(BULKHEAD_CALLS, &[("name", name), ("outcome", outcome)]))
                .sum()
        };
        RejectionCounts {
            rate_limited: sum(
                RATE_LIMIT_DECISIONS,
                &[("name", layers::API), ("outcome", "denied")],
            ),
            validation: sum(VALIDATION_REJECTIONS, &[("name", layers::ORDERS)])
                + idempotency("invalid_key"),
            idempotency_conflict: idempotency("conflict"),
            idempotency_mismatch: idempotency("mismatch"),
            breaker_open: downstreams(CIRCUIT_BREAKER_CALLS, "rejected"),
            timeout: downstreams(TIMEOUT_CALLS, "timed_out"),
            orders_shed: shed(layers::ORDERS),
            recommendations_shed: shed(layers::RECOMMENDATIONS),
        }
    }
}

/// The sum of the counters `metric` whose labels include every pair of
/// `labels`, in a Prometheus text exposition.
pub fn counter_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            // Counters render as integers; a float is a histogram or gauge.
            wanted.then(|| value.parse::<u64>().ok()).flatten()
        })
        .sum()
}
