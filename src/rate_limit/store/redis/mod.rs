//! The Redis store: one Lua script per decision, on Redis's own clock.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{Decision, Limits, Store, StoreError};
use crate::rate_limit::Quota;
use crate::redis_conn::{Conn, Script, hash_tag};

mod batch;

use self::batch::{Batcher, Turn};

const ONE: &str = include_str!("gcra.lua");
const MANY: &str = include_str!("gcra_many.lua");
const BATCH: &str = include_str!("gcra_batch.lua");
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_PREFIX: &str = "palisade:rl:";
const DENY_SHARDS: usize = 16;
const DENY_MAX_PER_SHARD: usize = 4096;

/// The shared store: every decision is one Lua script on Redis, so every
/// instance that talks to the same Redis sees one count.
///
/// - **Atomic and exact**: the script reads every quota's state, decides,
///   and writes only when all allow. One quota (the common case) gets a
///   leaner script than several; both decide alike.
/// - **One clock**: time is Redis's `TIME` in integer microseconds, so
///   instances with skewed clocks agree. An emission interval that is not a
///   whole number of microseconds (such as 3 per second) is rounded up to
///   the next microsecond, which is never more permissive.
/// - **One Redis or a Redis Cluster**: [`connect`](Self::connect) and
///   [`new`](Self::new) take one Redis, [`connect_cluster`](Self::connect_cluster)
///   a cluster. On a cluster, each decision goes to the master that serves
///   its key's slot, following `MOVED` and `ASK`.
/// - **One slot per decision, self-cleaning**: keys are
///   `<prefix><namespace>:{<key>}:<quota name>` for a named quota (a tier's
///   quotas are named after it), so every instance that runs a quota of that
///   name shares its buckets, whatever value each runs (one reloaded at run
///   time, one started with the new value); an unnamed quota's key ends with
///   `:<interval µs>:<burst>`, those it was built with (a replacement at run
///   time through a [`Handle`](super::super::Handle) keeps its keys). Everything
///   up to the closing brace is the same for every quota of one decision, so
///   the hash tag `{<key>}` puts all of them in one slot (no `CROSSSLOT`),
///   while different keys spread over the cluster. A key that is empty or
///   starts with `}` or `\` (which would give an empty tag, or collide) is
///   written with a leading `\`; the prefix and namespace must not contain
///   braces, or their tag would take over. Every key gets a TTL that ends
///   when its bucket is full again.
/// - **Bounded by Redis's answer**: a decision fails with
///   [`StoreError::Timeout`] when Redis does not answer its script call
///   within [`timeout`](Self::timeout) (default 50 ms) of the call being
///   sent: the round trip and Redis's work, and the second round trip of a
///   script reload. Under batching a decision may first wait for one round
///   trip already out (bounded too), so it answers within twice the bound
///   plus scheduling (the batch that first meets an endpoint enforcing hash
///   slots, see below, goes twice: three times), and gives up after three
///   times the bound in any case.
///   The layer's [`OnStoreError`](crate::store::OnStoreError) decides
///   what a failure means. A decision that timed out may still have run on
///   Redis and spent its cells. Connections set `TCP_NODELAY` (redis-rs
///   does not): with Nagle's algorithm, concurrent decisions on one
///   connection wait a round trip for each other's ACKs. The connection is
///   one multiplexed [`ConnectionManager`] (on a
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
/// - **Batching under load** (on by default, one Redis only): while two
///   round trips are out, further one-quota decisions queue, and go
///   together as soon as one comes back (and the callers it answered have
///   had a turn to queue again): one script call for up to 128 of
///   them, in arrival order, all the calls in one round trip; when they
///   share their quota and cost, as under one layer they mostly do, the
///   call carries those parameters once. Each is
///   decided exactly as alone, on one reading of Redis's clock; a lone
///   caller never waits. With 64 concurrent callers on a nearby Redis this
///   halves both Redis's CPU time per decision and the client's; a queued
///   decision waits up to one round trip more, which matters with a
///   distant Redis. Behind an endpoint that enforces hash slots on one
///   address (a Redis Cluster proxy, serverless Redis, a cluster-enabled
///   node), the first batch whose keys span slots is refused with
///   `CROSSSLOT` before anything runs; the store then sends it again, one
///   call per slot, and groups every later batch by slot, so no decision
///   fails. There a batch saves work only for decisions that share a slot
///   (the same key, or few keys): with per-client keys it makes about one
///   call per decision, and turning batching off saves the wait; see
///   [`batching`](Self::batching).
///
/// Redis 8.8's native `GCRA` command is not used: the script runs on every
/// Redis version since 5 (where scripts replicate their effects).
///
/// ```no_run
/// use std::num::NonZeroU32;
/// use palisade::rate_limit::{Quota, RateLimitLayer, RedisStore};
///
/// # async fn run() -> Result<(), palisade::rate_limit::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let layer = RateLimitLayer::with_store(store, Quota::per_minute(NonZeroU32::new(100).unwrap()));
/// # Ok(()) }
/// ```
///
/// On a Redis Cluster, list a few of its nodes:
///
/// ```no_run
/// # async fn run() -> Result<(), palisade::rate_limit::StoreError> {
/// use std::num::NonZeroU32;
/// use palisade::rate_limit::{Quota, RateLimitLayer, RedisStore};
///
/// let n = |n| NonZeroU32::new(n).unwrap();
/// let store = RedisStore::connect_cluster(&[
///     "redis://10.0.0.1:6379/",
///     "redis://10.0.0.2:6379/",
///     "redis://10.0.0.3:6379/",
/// ])
/// .await?;
/// let layer = RateLimitLayer::with_store(store, Quota::per_minute(n(100)).burst(n(20)))
///     .quota(Quota::per_hour(n(1000)));
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
    scripts: Arc<Scripts>,
    #[cfg(feature = "metrics")]
    metrics: Arc<crate::redis_conn::OpMetrics>,
    prefix: Arc<str>,
    timeout: Duration,
    deny_cache: Option<Arc<DenyCache>>,
    /// `None` on a cluster (one script's keys must share a slot) or when
    /// turned off.
    batcher: Option<Arc<Batcher>>,
}

impl RedisStore {
    /// Connects to `url` with a reconnecting [`ConnectionManager`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(crate::redis_conn::connect(url).await?))
    }

    /// Uses `conn` (clones of a `ConnectionManager` share one connection).
    ///
    /// Give it a connection with `TCP_NODELAY`
    /// (`ConnectionInfo::set_tcp_settings`), as [`connect`](Self::connect)
    /// does: redis-rs leaves Nagle's algorithm on, and concurrent decisions
    /// then wait a round trip for each other.
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
    /// again, in the background, after a redirection or a failure. A
    /// master that a redirection names before the slot map lists it (during
    /// a resharding) gets one connection, opened once and shared by every
    /// call that needs it, not one per call; if opening it fails, every
    /// call waiting for it fails (within the bound) and the next one tries
    /// again.
    pub async fn connect_cluster<U: AsRef<str>>(urls: &[U]) -> Result<Self, StoreError> {
        Ok(Self::with_conn(Conn::Cluster(
            crate::redis_conn::Cluster::connect(urls).await?,
        )))
    }

    fn with_conn(conn: Conn) -> Self {
        let scripts = Arc::new(Scripts {
            one: Script::new(ONE),
            many: Script::new(MANY),
            batch: Script::new(BATCH),
        });
        let store = Self {
            #[cfg(feature = "metrics")]
            metrics: Arc::new(crate::redis_conn::OpMetrics::new(
                "rate_limit",
                conn.label(),
                "decide",
            )),
            conn,
            scripts,
            prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            deny_cache: Some(Arc::new(DenyCache::new())),
            batcher: None,
        };
        store.batching(true)
    }

    /// Sets the prefix of every key (default `palisade:rl:`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// Sets how long Redis may take to answer a decision (default 50 ms),
    /// counted from when its script call is sent, not from when the
    /// decision queued; see the type's docs for what a queued decision
    /// waits in all.
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

    /// Turns batching under load on (the default) or off.
    ///
    /// With batching, a one-quota decision that arrives while two round
    /// trips are out waits for one of them to come back, then goes with the
    /// others that queued meanwhile: one script call for up to 128 of them,
    /// whatever their keys, all the calls pipelined in one round trip. A
    /// script decides its decisions in arrival order, each as it would
    /// alone (a later decision on a key sees what an earlier one spent),
    /// and writes each key once. Without batching every decision is its own
    /// `EVALSHA`, pipelined on the shared connection. Decisions with several
    /// quotas, and every decision on a Redis Cluster, always go alone.
    ///
    /// An endpoint that enforces hash slots on one address (a Redis Cluster
    /// proxy, serverless Redis, a cluster-enabled node reached as one
    /// Redis) refuses a call whose keys span slots with `CROSSSLOT`, before
    /// the script runs. The first such refusal tells this store (and its
    /// clones) that the endpoint enforces slots: the refused batch is sent
    /// again, one call per slot, so none of its decisions fails or is
    /// counted twice, and every later batch goes one call per slot. Those
    /// decisions wait one round trip more, once. Behind such an endpoint a
    /// batch saves Redis work only for decisions that share a slot; with
    /// per-client keys (hardly two in one of the 16,384 slots) it makes
    /// about one call per decision, and `batching(false)` saves the wait.
    ///
    /// Each script call is bounded by [`timeout`](Self::timeout) from when
    /// it is sent, so waiting in the queue (for at most one round trip
    /// already out) never fails a decision; a decision that gives up while
    /// queued is not sent. Like any decision that timed out, a batch that
    /// timed out may still have run on Redis. With a distant Redis, a
    /// queued decision takes up to two round trips instead of one.
    #[must_use]
    pub fn batching(mut self, on: bool) -> Self {
        let single = matches!(self.conn, Conn::Single(_));
        self.batcher =
            (on && single).then(|| Arc::new(Batcher::new(self.conn.clone(), self.scripts.clone())));
        self
    }

    /// The Redis keys of `key` under `limits`, one per quota, all with the
    /// same hash tag.
    pub fn keys(&self, key: &str, limits: &Limits) -> Vec<String> {
        let tag = hash_tag(key);
        (0..limits.quotas().len())
            .map(|i| {
                let mut out = String::new();
                self.key_into(&mut out, &tag, limits, i);
                out
            })
            .collect()
    }

    // `<prefix><namespace>:{<tag>}:<quota name>`, and for an unnamed quota
    // `:<interval µs>:<burst>` after it. Pushed piece by piece: `write!`
    // costs more than the rest of a batched decision's client side.
    fn key_into(&self, out: &mut String, tag: &str, limits: &Limits, i: usize) {
        // An unnamed quota is named by the quota the limits replaced, if
        // any: a quota replaced at run time keeps every key's state.
        let (scope, q) = (limits.namespace(), &limits.named_by()[i]);
        out.clear();
        out.push_str(&self.prefix);
        out.push_str(scope);
        if !scope.is_empty() {
            out.push(':');
        }
        out.push('{');
        out.push_str(tag);
        out.push_str("}:");
        out.push_str(limits.name(i));
        if limits.quotas()[i].name().is_none() {
            out.push(':');
            push_decimal(out, micros(q.interval_nanos()));
            out.push(':');
            push_decimal(out, u64::from(q.max_burst().get()));
        }
    }

    async fn run_script(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        let tag = hash_tag(key);
        let mut buf = String::with_capacity(self.prefix.len() + key.len() + 48);
        if let [quota] = limits.quotas() {
            let p = Params::new(quota, cost);
            self.key_into(&mut buf, &tag, limits, 0);
            let reply = match self
                .batcher
                .as_ref()
                .map(|b| b.enter(&mut buf, p, self.timeout))
            {
                None => bounded(self.timeout, self.one(&buf, p)).await?,
                Some(Turn::Now(slot)) => {
                    let reply = bounded(self.timeout, self.one(&buf, p)).await;
                    drop(slot);
                    reply?
                }
                // The batch is bounded from when it is sent, after at most
                // one round trip out (bounded too); this bound only keeps
                // the wait finite should a round trip out never come back
                // (its caller stopped polling it).
                Some(Turn::Queued(answer)) => {
                    let bound = self.timeout.saturating_mul(3);
                    bounded(bound, async {
                        answer.await.unwrap_or_else(|_| Err(batch::dropped()))
                    })
                    .await?
                }
            };
            // `d` when allowed, `-1 - d` (`!d`) when denied.
            let (allowed, d) = if reply >= 0 {
                (true, reply)
            } else {
                (false, !reply)
            };
            return derive(&[p], &[d.cast_unsigned()], allowed)
                .ok_or_else(|| StoreError::Protocol(reply.to_string()));
        }
        let params: Vec<Params> = limits
            .quotas()
            .iter()
            .map(|q| Params::new(q, cost))
            .collect();
        let mut call = self.scripts.many.call();
        for (i, p) in params.iter().enumerate() {
            self.key_into(&mut buf, &tag, limits, i);
            call.key(&buf).arg(p.inc).arg(p.room()).arg(p.fresh_ttl());
        }
        let reply: Vec<i64> =
            bounded(self.timeout, async { Ok(call.invoke(&self.conn).await?) }).await?;
        let decision = match &reply[..] {
            [allowed @ (0 | 1), ds @ ..]
                if ds.len() == params.len() && ds.iter().all(|d| *d >= 0) =>
            {
                let ds: Vec<u64> = ds.iter().map(|d| d.cast_unsigned()).collect();
                derive(&params, &ds, *allowed == 1)
            }
            _ => None,
        };
        decision.ok_or_else(|| StoreError::Protocol(format!("{reply:?}")))
    }

    async fn one(&self, key: &str, p: Params) -> Result<i64, StoreError> {
        self.scripts.one(&self.conn, key, p).await
    }
}

/// The scripts: one quota (the common case), several, and a batch of
/// one-quota decisions.
struct Scripts {
    one: Script,
    many: Script,
    batch: Script,
}

impl Scripts {
    /// One decision under one quota, alone: the lean script's reply.
    async fn one(&self, conn: &Conn, key: &str, p: Params) -> Result<i64, StoreError> {
        let mut call = self.one.call();
        call.key(key).arg(p.inc).arg(p.room()).arg(p.fresh_ttl());
        Ok(call.invoke(conn).await?)
    }
}

/// One quota's GCRA parameters for a decision of some cost, in whole
/// microseconds, as the scripts get them.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// The emission interval (at least 1).
    interval: u64,
    /// The tolerance: `interval * burst`.
    tau: u64,
    /// What the request adds to the TAT: `interval * cost`.
    inc: u64,
}

/// 2^62 µs, 146,000 years: a bucket spent that far ahead stays spent. Every
/// parameter is capped here, so every TAT the scripts write, and every
/// `d` they return, fits an `i64` (and the C `long` the scripts format
/// them as).
const MAX_MICROS: u64 = 1 << 62;

impl Params {
    fn new(quota: &Quota, cost: u32) -> Self {
        let interval = micros(quota.interval_nanos()).min(MAX_MICROS);
        Self {
            interval,
            tau: interval
                .saturating_mul(u64::from(quota.max_burst().get()))
                .min(MAX_MICROS),
            inc: interval.saturating_mul(u64::from(cost)).min(MAX_MICROS),
        }
    }

    /// Whether a script decides `other` as it decides these: the same
    /// increment and tolerance.
    fn same_as(&self, other: &Self) -> bool {
        self.inc == other.inc && self.tau == other.tau
    }

    /// How far the TAT may be ahead of now for the request to pass: the
    /// scripts compare with this, not `d + inc` with `tau`, to convert one
    /// argument less. Negative when `cost` exceeds the burst.
    fn room(&self) -> i64 {
        // Both are at most `MAX_MICROS`.
        self.tau.cast_signed() - self.inc.cast_signed()
    }

    /// The TTL (ms, at least 1) of a key written from a full bucket: the
    /// scripts' common case, which then formats no number for it.
    fn fresh_ttl(&self) -> u64 {
        self.inc.div_ceil(1000).max(1)
    }
}

/// The decision the scripts took, from `ds[i]`, how far (µs) quota `i`'s
/// TAT was ahead of Redis's clock (0 when behind or absent): what
/// `super::decide` gives in memory, in microseconds. `None` when it is not
/// `allowed`, as the script says, which only a reply garbled somewhere can
/// cause.
fn derive(params: &[Params], ds: &[u64], allowed: bool) -> Option<Decision> {
    let mut denied: Option<(usize, u64)> = None;
    for (i, (p, &d)) in params.iter().zip(ds).enumerate() {
        let next = d.saturating_add(p.inc);
        if next > p.tau {
            let wait = next - p.tau;
            if denied.is_none_or(|(_, w)| wait > w) {
                denied = Some((i, wait));
            }
        }
    }
    if let Some((i, wait)) = denied {
        let (p, d) = (params[i], ds[i]);
        return (!allowed).then(|| {
            Decision::denied_slack(
                i,
                p.tau.saturating_sub(d),
                p.interval,
                Duration::from_micros(d),
                Duration::from_micros(wait),
            )
        });
    }
    if !allowed {
        return None;
    }
    if let ([p], [d]) = (params, ds) {
        let next = d.saturating_add(p.inc);
        return Some(Decision::allowed_slack(
            0,
            p.tau - next,
            p.interval,
            Duration::from_micros(next),
        ));
    }
    // The binding quota: the fewest cells left, then the latest reset.
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, (p, &d)) in params.iter().zip(ds).enumerate() {
        let next = d.saturating_add(p.inc);
        let remaining = (p.tau - next) / p.interval;
        if best.is_none_or(|(_, r, n)| remaining < r || (remaining == r && next > n)) {
            best = Some((i, remaining, next));
        }
    }
    let (i, remaining, next) = best?;
    Some(Decision::allowed(i, remaining, Duration::from_micros(next)))
}

/// `call`, or [`StoreError::Timeout`] once `bound` has passed.
async fn bounded<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(bound)))
}

/// `n` in decimal, as `write!(out, "{n}")` would.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
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
        // Each round trip is bounded where it is sent, in `run_script`.
        let result = self.run_script(key, limits, cost).await;
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
            .field("batching", &self.batcher.is_some())
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Gcra, decide};
    use super::*;

    // Few distinct intervals and bursts, so quotas often tie.
    fn params() -> impl Strategy<Value = (u64, u32)> {
        (
            prop_oneof![Just(1_000u64), Just(2_000), Just(3_000), 1u64..=5_000],
            1u32..=8,
        )
    }

    proptest! {
        /// What the client derives from the scripts' `d`s is what the
        /// in-memory GCRA decides from the same state, binding quota and
        /// ties included.
        #[test]
        fn the_derived_decision_is_the_in_memory_one(
            quotas in prop::collection::vec(params(), 1..=3),
            cost in 0u32..=10,
            state in prop::collection::vec((any::<bool>(), 0u64..=40_000), 3),
        ) {
            let now = 1_000_000_000_000u64;
            let mut ps = Vec::new();
            let mut gcra = Vec::new();
            let mut ds = Vec::new();
            let mut tats = Vec::new();
            for (&(interval, burst), &(behind, ahead)) in quotas.iter().zip(&state) {
                let p = Params {
                    interval,
                    tau: interval * u64::from(burst),
                    inc: interval * u64::from(cost),
                };
                ps.push(p);
                gcra.push(Gcra { interval: interval * 1000, tau: p.tau * 1000 });
                // A TAT behind now counts as now; ahead by `d` µs otherwise,
                // often on a multiple of the interval, where ties happen.
                let d = match (behind, ahead % 4) {
                    (true, _) => 0,
                    (false, 0) => ahead,
                    (false, _) => interval * (ahead % 10),
                };
                ds.push(d);
                tats.push(if behind { now - ahead * 1000 } else { now + d * 1000 });
            }
            let expected = decide(&mut tats, now, cost, &gcra);
            let got = derive(&ps, &ds, expected.is_allowed());
            prop_assert_eq!(got, Some(expected));
            prop_assert_eq!(derive(&ps, &ds, !expected.is_allowed()), None);
        }
    }

    #[test]
    fn decimals_are_pushed_as_format_writes_them() {
        for n in [0, 7, 10, 999, 1_000_000_000, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn arguments_are_precomputed_in_microseconds() {
        let n = |n| std::num::NonZeroU32::new(n).unwrap();
        let quota = Quota::per_second(n(3)).burst(n(4));
        let p = Params::new(&quota, 2);
        // 1 s / 3 is rounded up to the next microsecond, never down.
        assert_eq!((p.interval, p.tau, p.inc), (333_334, 1_333_336, 666_668));
        assert_eq!((p.room(), p.fresh_ttl()), (666_668, 667));
        let free = Params::new(&quota, 0);
        assert_eq!(
            (free.room(), free.fresh_ttl()),
            (1_333_336, 1),
            "a TTL of at least 1 ms"
        );
        assert_eq!(
            Params::new(&quota, 5).room(),
            -333_334,
            "too costly for any bucket"
        );
    }
}
