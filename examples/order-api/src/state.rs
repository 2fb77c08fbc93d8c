//! Shared application state and the counters behind `/admin/stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::clients::{PaymentClient, RecommendationsClient};
use crate::config::Config;
use crate::faults::{FakePayments, Faults};
use crate::repository::Repository;
use crate::service::OrderService;

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
    pub recommendations: RecommendationsClient,
    pub faults: Faults,
    pub fake_payments: FakePayments,
    /// Shared with the counting layer (`telemetry::ObserveLayer`).
    pub stats: Arc<Stats>,
    /// Where the rate-limit and idempotency layers keep their state.
    pub stores: Stores,
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
    /// Wires the state from its parts.
    pub fn new(
        config: Config,
        repository: Repository,
        payment: PaymentClient,
        recommendations: RecommendationsClient,
        stores: Stores,
    ) -> Self {
        Self(Arc::new(Parts {
            config,
            orders: OrderService::new(repository, payment),
            recommendations,
            faults: Faults::default(),
            fake_payments: FakePayments::default(),
            stats: Arc::new(Stats::default()),
            stores,
        }))
    }
}

/// A request turned away, as `/admin/stats` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RateLimited,
    Validation,
    IdempotencyConflict,
    IdempotencyMismatch,
    BreakerOpen,
    Timeout,
}

/// Rejection counters. Atomics: counting must not serialise requests.
#[derive(Debug, Default)]
pub struct Stats {
    rate_limited: AtomicU64,
    validation: AtomicU64,
    idempotency_conflict: AtomicU64,
    idempotency_mismatch: AtomicU64,
    breaker_open: AtomicU64,
    timeout: AtomicU64,
}

/// The `rejections` member of `/admin/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RejectionCounts {
    pub rate_limited: u64,
    pub validation: u64,
    pub idempotency_conflict: u64,
    pub idempotency_mismatch: u64,
    pub breaker_open: u64,
    pub timeout: u64,
}

impl Stats {
    pub fn record(&self, rejection: Rejection) {
        let counter = match rejection {
            Rejection::RateLimited => &self.rate_limited,
            Rejection::Validation => &self.validation,
            Rejection::IdempotencyConflict => &self.idempotency_conflict,
            Rejection::IdempotencyMismatch => &self.idempotency_mismatch,
            Rejection::BreakerOpen => &self.breaker_open,
            Rejection::Timeout => &self.timeout,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RejectionCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RejectionCounts {
            rate_limited: get(&self.rate_limited),
            validation: get(&self.validation),
            idempotency_conflict: get(&self.idempotency_conflict),
            idempotency_mismatch: get(&self.idempotency_mismatch),
            breaker_open: get(&self.breaker_open),
            timeout: get(&self.timeout),
        }
    }
}
