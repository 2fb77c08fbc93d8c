//! The Redis store: one Lua script per decision, on Redis's own clock.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{Decision, Limits, Store, StoreError};
use crate::redis_conn::{Conn, Script, hash_tag};

const SCRIPT: &str = include_str!("gcra.lua");
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_PREFIX: &str = "palisade:rl:";
const DENY_SHARDS: usize = 16;
const DENY_MAX_PER_SHARD: usize = 4096;

/// The shared store: every decision is one Lua script on Redis, so every
/// instance that talks to the same Redis sees one count.
///
/// - **Atomic and exact**: the script reads every quota's state, decides,
///   and writes only when all allow.
/// - **One clock**: time is Redis's `TIME` in integer microseconds, so
///   instances with skewed clocks agree. An emission interval that is not a
///   whole number of microseconds (such as 3 per second) is rounded up to
///   the next microsecond, which is never more permissive.
/// - **One Redis or a Redis Cluster**: [`connect`](Self::connect) and
///   [`new`](Self::new) take one Redis, [`connect_cluster`](Self::connect_cluster)
///   a cluster. On a cluster, each decision goes to the master that serves
///   its key's slot, following `MOVED` and `ASK`.
/// - **One slot per decision, self-cleaning**: keys are
///   `<prefix><scope>:{<key>}:<quota name>:<interval µs>:<burst>`. Everything
///   up to the closing brace is the same for every quota of one decision, so
///   the hash tag `{<key>}` puts all of them in one slot (no `CROSSSLOT`),
///   while different keys spread over the cluster. A key that is empty or
///   starts with `}` or `\` (which would give an empty tag, or collide) is
///   written with a leading `\`; the prefix and scope must not contain
///   braces, or their tag would take over. Every key gets a TTL that ends
///   when its bucket is full again.
/// - **Bounded**: each decision gives up after [`timeout`](Self::timeout)
///   (default 50 ms) with [`StoreError::Timeout`]; the layer's
///   [`FailurePolicy`](crate::rate_limit::FailurePolicy) decides what then.
///   A decision that timed out may still have run on Redis and spent its
///   cells. The connection is one multiplexed [`ConnectionManager`] (on a
///   cluster, one per master), shared by all concurrent decisions and
///   clones, that reconnects by itself. On a cluster, a dead master fails
///   (within the bound) only the decisions whose keys it serves; the others
///   go on, and its slots come back with it. Run the cluster with
///   `cluster-require-full-coverage no` where a master has no replica to
///   take over: otherwise every node refuses every key once the dead master
///   is marked failed.
/// - **Scripts reload themselves**: every decision is an `EVALSHA` sent to
///   the node of its slot; after `NOSCRIPT` (a `SCRIPT FLUSH`, a restarted
///   or new node) it is sent again as `EVAL`, which runs the script and
///   caches it on that node.
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
///
/// On a Redis Cluster, list a few of its nodes:
///
/// ```no_run
/// # async fn run() -> Result<(), palisade::rate_limit::StoreError> {
/// use palisade::rate_limit::{Quota, RateLimitLayer, RedisStore};
///
/// let store = RedisStore::connect_cluster(&[
///     "redis://10.0.0.1:6379/",
///     "redis://10.0.0.2:6379/",
///     "redis://10.0.0.3:6379/",
/// ])
/// .await?;
/// let layer = RateLimitLayer::redis(store, Quota::per_minute(100).burst(20))
///     .quota(Quota::per_hour(1000));
/// # Ok(()) }
/// ```
///
/// With feature `metrics`, every round trip records
/// `palisade_store_duration_seconds` and every failed one (a timeout too)
/// `palisade_store_errors_total`, labelled `layer="rate_limit"`,
/// `store="redis"` or `"redis_cluster"`, `op="decide"`; denials from the
/// local deny cache are not round trips.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    script: Arc<Script>,
    #[cfg(feature = "metrics")]
    metrics: Arc<crate::redis_conn::OpMetrics>,
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
        Self::with_conn(Conn::Single(conn))
    }

    /// Connects to the Redis Cluster that `urls` belong to (one reachable
    /// node is enough; list several in case one is down) and reads its slot
    /// map.
    ///
    /// Each master gets its own reconnecting connection, so a dead master
    /// fails, within [`timeout`](Self::timeout), only the decisions whose
    /// keys it serves. `MOVED` and `ASK` are followed; the slot map is read
    /// again, in the background, after a redirection or a failure.
    pub async fn connect_cluster<U: AsRef<str>>(urls: &[U]) -> Result<Self, StoreError> {
        Ok(Self::with_conn(Conn::Cluster(
            crate::redis_conn::Cluster::connect(urls).await?,
        )))
    }

    fn with_conn(conn: Conn) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            metrics: Arc::new(crate::redis_conn::OpMetrics::new(
                "rate_limit",
                conn.label(),
                "decide",
            )),
            conn,
            script: Arc::new(Script::new(SCRIPT)),
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

    /// The Redis keys of `key` under `limits`, one per quota, all with the
    /// same hash tag.
    pub fn keys(&self, key: &str, limits: &Limits) -> Vec<String> {
        let scope = limits.scope();
        let sep = if scope.is_empty() { "" } else { ":" };
        let key = hash_tag(key);
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
        let mut call = self.script.call();
        for k in self.keys(key, limits) {
            call.key(k);
        }
        call.arg(cost);
        for q in limits.quotas() {
            let interval = micros(q.interval_nanos());
            call.arg(interval)
                .arg(interval.saturating_mul(u64::from(q.max_burst())));
        }
        let reply: Vec<i64> = call.invoke(&self.conn).await?;
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
        let result = tokio::time::timeout(self.timeout, self.run_script(key, limits, cost))
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)));
        #[cfg(feature = "metrics")]
        self.metrics.record(sent.elapsed(), result.is_err());
        let decision = result?;
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
            .field("store", &self.conn.label())
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
        Some(
            Decision::denied(
                d.decision.quota(),
                d.decision.remaining(),
                d.decision.reset().saturating_sub(elapsed),
                retry_after,
            )
            .cached(),
        )
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
