//! Configuration from the environment.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use palisade::load_shed::Queue;

/// Everything the demo reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ORDER_API_ADDR`, default `127.0.0.1:3000`.
    pub addr: SocketAddr,
    /// `REDIS_URL`: rate-limit and idempotency state in Redis; unset: in memory.
    pub redis_url: Option<String>,
    /// `DATABASE_URL`: orders in PostgreSQL; unset: in memory.
    pub database_url: Option<String>,
    /// `ORDER_RATE_LIMIT_PER_SECOND`, default 10.
    pub rate_limit_per_second: NonZeroU32,
    /// `ORDER_RATE_LIMIT_BURST`, default 20.
    pub rate_limit_burst: NonZeroU32,
    /// `PAYMENT_URL`; `None`: this instance's own `/fake/payments`.
    pub payment_url: Option<String>,
    /// `PAYMENT_TIMEOUT_MS`, default 10000.
    pub payment_timeout: Duration,
    /// `RECOMMENDATIONS_TIMEOUT_MS`, default 3000.
    pub recommendations_timeout: Duration,
    /// `BREAKER_OPEN_MS`, default 30000: how long an open breaker stays open.
    pub breaker_open: Duration,
    /// `IDEMPOTENCY_MAX_KEYS`, default palisade's `DEFAULT_MAX_KEYS`
    /// (100,000): the in-memory idempotency store's bound (with Redis, Redis
    /// keeps the keys and this is unused).
    pub idempotency_max_keys: NonZeroUsize,
    /// `ADMIN_TOKEN`: when set, `/admin/*` and `/metrics` need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// `ORDER_API_CONFIG`: a palisade config file (such as
    /// `examples/order-api/palisade.toml`) whose sections replace the
    /// settings below for the layers they name, reloaded when it changes
    /// or on `SIGHUP`; `ORDER_API__<SECTION>__<NAME>__<FIELD>` variables
    /// override it. Unset: the settings below only.
    pub config_file: Option<std::path::PathBuf>,
    /// `DB_POOL_SIZE`, default 10: connections of the repository's pool,
    /// shared by every query (memory and PostgreSQL alike).
    pub db_pool_size: NonZeroUsize,
    /// `RECOMMENDATIONS_BULKHEAD`, default 3: recommendations queries in
    /// flight at most, so at most that many connections of the pool.
    pub recommendations_bulkhead: NonZeroU32,
    /// `RECOMMENDATIONS_QUEUE` (default 2; 0: none) and
    /// `RECOMMENDATIONS_QUEUE_WAIT_MS` (default 50): recommendations queries
    /// waiting for the bulkhead, and how long; past either, the page
    /// degrades.
    pub recommendations_queue: Option<Queue>,
    /// `ORDERS_BULKHEAD`, default `DB_POOL_SIZE - RECOMMENDATIONS_BULKHEAD`
    /// (7): order queries in flight at most. Within the pool's size beside
    /// the recommendations' share, an order query never waits for a
    /// connection a recommendations query holds.
    pub orders_bulkhead: NonZeroU32,
    /// `ORDERS_QUEUE` (default 32; 0: none) and `ORDERS_QUEUE_WAIT_MS`
    /// (default 500): order queries waiting for the bulkhead, and how long;
    /// past either, `503` with `Retry-After`.
    pub orders_queue: Option<Queue>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            redis_url: None,
            database_url: None,
            rate_limit_per_second: NonZeroU32::new(10).expect("non-zero"),
            rate_limit_burst: NonZeroU32::new(20).expect("non-zero"),
            payment_url: None,
            payment_timeout: Duration::from_millis(10_000),
            recommendations_timeout: Duration::from_millis(3_000),
            breaker_open: Duration::from_millis(30_000),
            idempotency_max_keys: palisade::idempotency::DEFAULT_MAX_KEYS,
            admin_token: None,
            config_file: None,
            db_pool_size: crate::repository::DEFAULT_POOL_SIZE,
            recommendations_bulkhead: NonZeroU32::new(3).expect("non-zero"),
            recommendations_queue: Queue::new(2, Duration::from_millis(50)).ok(),
            orders_bulkhead: NonZeroU32::new(7).expect("non-zero"),
            orders_queue: Queue::new(32, Duration::from_millis(500)).ok(),
        }
    }
}

/// A variable that is set but unusable; the demo refuses to start with it.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    reason: &'static str,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::default();
        if let Some(v) = get("ORDER_API_ADDR") {
            config.addr = v.trim().parse().map_err(|_| ConfigError {
                name: "ORDER_API_ADDR",
                value: v.clone(),
                reason: "expected an address such as 127.0.0.1:3000",
            })?;
        }
        config.redis_url = get("REDIS_URL");
        config.database_url = get("DATABASE_URL");
        config.admin_token = get("ADMIN_TOKEN");
        config.config_file = get("ORDER_API_CONFIG").map(Into::into);
        if let Some(v) = get("PAYMENT_URL") {
            if !v.starts_with("http://") {
                return Err(ConfigError {
                    name: "PAYMENT_URL",
                    value: v,
                    reason: "expected an http:// URL",
                });
            }
            config.payment_url = Some(v);
        }
        let nonzero =
            |name: &'static str, default: NonZeroU32| -> Result<NonZeroU32, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v.trim().parse().map_err(|_| ConfigError {
                        name,
                        value: v,
                        reason: "expected a whole number >= 1",
                    }),
                }
            };
        config.rate_limit_per_second =
            nonzero("ORDER_RATE_LIMIT_PER_SECOND", config.rate_limit_per_second)?;
        config.rate_limit_burst = nonzero("ORDER_RATE_LIMIT_BURST", config.rate_limit_burst)?;
        if let Some(v) = get("IDEMPOTENCY_MAX_KEYS") {
            config.idempotency_max_keys = v.trim().parse().map_err(|_| ConfigError {
                name: "IDEMPOTENCY_MAX_KEYS",
                value: v.clone(),
                reason: "expected a whole number >= 1",
            })?;
        }
        let millis = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(ConfigError {
                        name,
                        value: v,
                        reason: "expected milliseconds >= 1",
                    }),
                },
            }
        };
        config.payment_timeout = millis("PAYMENT_TIMEOUT_MS", config.payment_timeout)?;
        config.recommendations_timeout =
            millis("RECOMMENDATIONS_TIMEOUT_MS", config.recommendations_timeout)?;
        config.breaker_open = millis("BREAKER_OPEN_MS", config.breaker_open)?;
        if let Some(v) = get("DB_POOL_SIZE") {
            config.db_pool_size = v.trim().parse().map_err(|_| ConfigError {
                name: "DB_POOL_SIZE",
                value: v.clone(),
                reason: "expected a whole number >= 1",
            })?;
        }
        config.recommendations_bulkhead =
            nonzero("RECOMMENDATIONS_BULKHEAD", config.recommendations_bulkhead)?;
        let pool = u32::try_from(config.db_pool_size.get()).unwrap_or(u32::MAX);
        config.orders_bulkhead = match get("ORDERS_BULKHEAD") {
            Some(_) => nonzero("ORDERS_BULKHEAD", config.orders_bulkhead)?,
            None => pool
                .checked_sub(config.recommendations_bulkhead.get())
                .and_then(NonZeroU32::new)
                .ok_or_else(|| ConfigError {
                    name: "RECOMMENDATIONS_BULKHEAD",
                    value: config.recommendations_bulkhead.to_string(),
                    reason: "leaves no connection of DB_POOL_SIZE for orders (set ORDERS_BULKHEAD)",
                })?,
        };
        let queue = |len: &'static str,
                     wait: &'static str,
                     default: Option<Queue>|
         -> Result<Option<Queue>, ConfigError> {
            let default_len = default.map_or(0, |q| q.max_queued().get());
            let default_wait = default.map_or(Duration::from_millis(50), |q| q.max_wait());
            let max_queued = match get(len) {
                None => default_len,
                Some(v) => v.trim().parse::<usize>().map_err(|_| ConfigError {
                    name: len,
                    value: v,
                    reason: "expected a whole number (0: no queue)",
                })?,
            };
            let max_wait = millis(wait, default_wait)?;
            if max_queued == 0 {
                return Ok(None);
            }
            Queue::new(max_queued, max_wait)
                .map(Some)
                .map_err(|_| ConfigError {
                    name: len,
                    value: max_queued.to_string(),
                    reason: "longer than a bulkhead's queue may be",
                })
        };
        config.recommendations_queue = queue(
            "RECOMMENDATIONS_QUEUE",
            "RECOMMENDATIONS_QUEUE_WAIT_MS",
            config.recommendations_queue,
        )?;
        config.orders_queue = queue("ORDERS_QUEUE", "ORDERS_QUEUE_WAIT_MS", config.orders_queue)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = from(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.rate_limit_per_second.get(), 10);
        assert_eq!(c.rate_limit_burst.get(), 20);
        assert_eq!(c.payment_timeout, Duration::from_millis(10_000));
        assert_eq!(c.recommendations_timeout, Duration::from_millis(3_000));
        assert_eq!(c.breaker_open, Duration::from_millis(30_000));
        assert!(c.payment_url.is_none() && c.redis_url.is_none() && c.database_url.is_none());
        assert!(c.admin_token.is_none());
        assert_eq!(c.db_pool_size.get(), 10);
        assert_eq!(c.recommendations_bulkhead.get(), 3);
        assert_eq!(c.orders_bulkhead.get(), 7);
        let q = c.recommendations_queue.unwrap();
        assert_eq!(
            (q.max_queued().get(), q.max_wait()),
            (2, Duration::from_millis(50))
        );
        let q = c.orders_queue.unwrap();
        assert_eq!(
            (q.max_queued().get(), q.max_wait()),
            (32, Duration::from_millis(500))
        );
    }

    #[test]
    fn bulkheads_share_the_pool() {
        // Orders get what the recommendations leave of the pool.
        let c = from(&[("DB_POOL_SIZE", "20"), ("RECOMMENDATIONS_BULKHEAD", "5")]).unwrap();
        assert_eq!(
            (c.recommendations_bulkhead.get(), c.orders_bulkhead.get()),
            (5, 15)
        );
        let c = from(&[
            ("ORDERS_BULKHEAD", "4"),
            ("ORDERS_QUEUE", "0"),
            ("RECOMMENDATIONS_QUEUE", "8"),
            ("RECOMMENDATIONS_QUEUE_WAIT_MS", "20"),
        ])
        .unwrap();
        assert_eq!(c.orders_bulkhead.get(), 4);
        assert!(c.orders_queue.is_none());
        let q = c.recommendations_queue.unwrap();
        assert_eq!(
            (q.max_queued().get(), q.max_wait()),
            (8, Duration::from_millis(20))
        );
        let err = from(&[("DB_POOL_SIZE", "3")]).unwrap_err();
        assert!(
            err.to_string().starts_with("RECOMMENDATIONS_BULKHEAD"),
            "{err}"
        );
    }

    #[test]
    fn reads_every_variable() {
        let c = from(&[
            ("ORDER_API_ADDR", "0.0.0.0:8080"),
            ("REDIS_URL", "redis://127.0.0.1:1/"),
            ("DATABASE_URL", "postgres://x@127.0.0.1/test"),
            ("ORDER_RATE_LIMIT_PER_SECOND", "3"),
            ("ORDER_RATE_LIMIT_BURST", "4"),
            ("PAYMENT_URL", "http://127.0.0.1:9/pay"),
            ("PAYMENT_TIMEOUT_MS", "5"),
            ("RECOMMENDATIONS_TIMEOUT_MS", "6"),
            ("BREAKER_OPEN_MS", "7"),
            ("ADMIN_TOKEN", "secret"),
            ("IDEMPOTENCY_MAX_KEYS", "8"),
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 8080);
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:1/"));
        assert!(c.database_url.is_some());
        assert_eq!(
            (c.rate_limit_per_second.get(), c.rate_limit_burst.get()),
            (3, 4)
        );
        assert_eq!(c.payment_url.as_deref(), Some("http://127.0.0.1:9/pay"));
        assert_eq!(c.payment_timeout, Duration::from_millis(5));
        assert_eq!(c.recommendations_timeout, Duration::from_millis(6));
        assert_eq!(c.breaker_open, Duration::from_millis(7));
        assert_eq!(c.admin_token.as_deref(), Some("secret"));
        assert_eq!(c.idempotency_max_keys.get(), 8);
    }

    #[test]
    fn refuses_unusable_values_with_the_variable_name() {
        for (name, value) in [
            ("ORDER_API_ADDR", "localhost"),
            ("ORDER_RATE_LIMIT_PER_SECOND", "0"),
            ("ORDER_RATE_LIMIT_BURST", "-1"),
            ("PAYMENT_TIMEOUT_MS", "0"),
            ("BREAKER_OPEN_MS", "soon"),
            ("PAYMENT_URL", "https://example.com"),
            ("IDEMPOTENCY_MAX_KEYS", "0"),
            ("DB_POOL_SIZE", "0"),
            ("RECOMMENDATIONS_BULKHEAD", "0"),
            ("ORDERS_BULKHEAD", "none"),
            ("ORDERS_QUEUE", "-1"),
            ("RECOMMENDATIONS_QUEUE_WAIT_MS", "0"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }
}
