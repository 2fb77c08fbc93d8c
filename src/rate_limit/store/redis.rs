//! The Redis store: one Lua script per decision, on Redis's own clock.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{Decision, Limits, Store, StoreError};

const SCRIPT: &str = include_str!("gcra.lua");
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_PREFIX: &str = "palisade:rl:";
const DENY_SHARDS: usize = 16;
const DENY_MAX_PER_SHARD: usize = 4096;

/// The shared store: every decision is one Lua script on Redis, so every
/// instance that talks to the same Redis sees one count.
///
/// - **Atomic and exact**: the script reads every quota's state, decides,
///   and writes only when all allow, by `EVALSHA` (reloaded by itself after
///   `NOSCRIPT`, for example after `SCRIPT FLUSH` or a restart).
/// - **One clock**: time is Redis's `TIME` in integer microseconds, so
///   instances with skewed clocks agree. An emission interval that is not a
///   whole number of microseconds (such as 3 per second) is rounded up to
///   the next microsecond, which is never more permissive.
/// - **Cluster-ready, self-cleaning**: keys are
///   `<prefix><scope>:{<key>}:<quota name>:<interval µs>:<burst>`; the hash
///   tag puts every quota of one key in one slot, and every key gets a TTL
///   that ends when its bucket is full again.
/// - **Bounded**: each decision gives up after [`timeout`](Self::timeout)
///   (default 50 ms) with [`StoreError::Timeout`]; the layer's
///   [`FailurePolicy`](crate::rate_limit::FailurePolicy) decides what then.
///   A decision that timed out may still have run on Redis and spent its
///   cells. The connection is one multiplexed [`ConnectionManager`], shared by all
///   concurrent decisions and clones, that reconnects by itself.
/// - **Local deny cache** (on by default): a key denied for `T` is denied
///   again in this process without asking Redis until `T` has passed,
///   which keeps a flood off Redis.
///
/// Redis 8.8's native `GCRA` command is not used: the script runs on every
/// Redis version since 5 (where scripts replicate their effects).
///
/// ```no_run
/// use palisade::rate_limit::{Quota, RateLimitLayer, RedisStore};
///
/// # async fn run() -> Result<(), palisade::rate_limit::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let layer = RateLimitLayer::redis(store, Quota::per_minute(100));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
    timeout: Duration,
    deny_cache: Option<Arc<DenyCache>>,
}

impl RedisStore {
    /// Connects to `url` with a reconnecting [`ConnectionManager`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(crate::redis_conn::connect(url).await?))
    }

    /// Uses `conn` (clones of a `ConnectionManager` share one connection).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            script: Arc::new(redis::Script::new(SCRIPT)),
            prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            deny_cache: Some(Arc::new(DenyCache::new())),
        }
    }

    /// Sets the prefix of every key (default `palisade:rl:`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// Sets the bound on one decision (default 50 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Turns the local deny cache on (the default) or off.
    #[must_use]
    pub fn deny_cache(mut self, on: bool) -> Self {
        self.deny_cache = on.then(|| Arc::new(DenyCache::new()));
        self
    }

    /// The Redis keys of `key` under `limits`, one per quota.
    pub fn keys(&self, key: &str, limits: &Limits) -> Vec<String> {
        let scope = limits.scope();
        let sep = if scope.is_empty() { "" } else { ":" };
        limits
            .quotas()
            .iter()
            .enumerate()
            .map(|(i, q)| {
                format!(
                    "{}{scope}{sep}{{{key}}}:{}:{}:{}",
                    self.prefix,
                    limits.name(i),
                    micros(q.interval_nanos()),
                    q.max_burst()
                )
            })
            .collect()
    }

    async fn run_script(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        for k in self.keys(key, limits) {
            invocation.key(k);
        }
        invocation.arg(cost);
        for q in limits.quotas() {
            let interval = micros(q.interval_nanos());
            invocation
                .arg(interval)
                .arg(interval.saturating_mul(u64::from(q.max_burst())));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        let [allowed, quota, remaining, reset, retry] = reply[..] else {
            return Err(StoreError::Protocol(format!("{reply:?}")));
        };
        let (Ok(quota), Ok(remaining), Ok(reset), Ok(retry)) = (
            usize::try_from(quota),
            u64::try_from(remaining),
            u64::try_from(reset),
            u64::try_from(retry),
        ) else {
            return Err(StoreError::Protocol(format!("{reply:?}")));
        };
        if quota >= limits.quotas().len() {
            return Err(StoreError::Protocol(format!("{reply:?}")));
        }
        let reset = Duration::from_micros(reset);
        Ok(if allowed == 1 {
            Decision::allowed(quota, remaining, reset)
        } else {
            Decision::denied(quota, remaining, reset, Duration::from_micros(retry))
        })
    }
}

fn micros(nanos: u64) -> u64 {
    nanos.div_ceil(1000)
}

impl Store for RedisStore {
    async fn check(&self, key: &str, limits: &Limits, cost: u32) -> Result<Decision, StoreError> {
        let sent = Instant::now();
        if let Some(cache) = &self.deny_cache
            && let Some(decision) = cache.get(key, limits, cost, sent)
        {
            return Ok(decision);
        }
        let decision = tokio::time::timeout(self.timeout, self.run_script(key, limits, cost))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        if let Some(cache) = &self.deny_cache
            && !decision.is_allowed()
        {
            cache.insert(key, limits, cost, sent, Instant::now(), decision);
        }
        Ok(decision)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("deny_cache", &self.deny_cache.is_some())
            .finish_non_exhaustive()
    }
}

// Keys recently denied: key hash -> until when, for what cost.
struct DenyCache {
    shards: Box<[Mutex<HashMap<u64, Denied>>]>,
    hasher: RandomState,
}

// Redis decided somewhere between `sent` and `received`: the local denial
// ends at `sent + retry_after`, so it never outlasts the real one, while the
// reported wait counts from `received`, so a client told to wait is not
// denied again when it comes back.
struct Denied {
    key: Box<str>,
    fingerprint: u64,
    cost: u32,
    sent: Instant,
    received: Instant,
    decision: Decision,
}

impl DenyCache {
    fn new() -> Self {
        Self {
            shards: (0..DENY_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str, limits: &Limits) -> (u64, &Mutex<HashMap<u64, Denied>>) {
        let hash = self.hasher.hash_one((limits.fingerprint(), key));
        (hash, &self.shards[(hash >> 40) as usize % DENY_SHARDS])
    }

    fn get(&self, key: &str, limits: &Limits, cost: u32, now: Instant) -> Option<Decision> {
        let (hash, shard) = self.shard(key, limits);
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let d = shard.get(&hash)?;
        // A cheaper request may fit sooner: only as costly ones are denied.
        if d.fingerprint != limits.fingerprint() || &*d.key != key || cost < d.cost {
            return None;
        }
        if now >= d.sent + d.decision.retry_after() {
            return None;
        }
        let elapsed = now.saturating_duration_since(d.received);
        let retry_after = d.decision.retry_after().saturating_sub(elapsed);
        Some(Decision::denied(
            d.decision.quota(),
            d.decision.remaining(),
            d.decision.reset().saturating_sub(elapsed),
            retry_after,
        ))
    }

    fn insert(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
        sent: Instant,
        received: Instant,
        decision: Decision,
    ) {
        let (hash, shard) = self.shard(key, limits);
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= DENY_MAX_PER_SHARD && !shard.contains_key(&hash) {
            let now = Instant::now();
            shard.retain(|_, d| d.sent + d.decision.retry_after() > now);
            if shard.len() >= DENY_MAX_PER_SHARD {
                return;
            }
        }
        shard.insert(
            hash,
            Denied {
                key: key.into(),
                fingerprint: limits.fingerprint(),
                cost,
                sent,
                received,
                decision,
            },
        );
    }
}
