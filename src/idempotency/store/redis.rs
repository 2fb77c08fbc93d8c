//! The Redis store: claim, renewal, completion and release are one Lua
//! script each.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};
use redis::Value;
use redis::aio::ConnectionManager;
#[cfg(feature = "metrics")]
use tokio::time::Instant;

use super::Store;
use crate::idempotency::error::StoreError;
use crate::idempotency::fingerprint::Fingerprint;
use crate::idempotency::record::{
    Claim, Completion, Lease, MAX_LEASE, MAX_TTL, Record, StoredResponse,
};
use crate::idempotency::store::MAX_STORE_TIMEOUT;
#[cfg(feature = "metrics")]
use crate::redis_conn::OpMetrics;
use crate::redis_conn::{Conn, Script, hash_tag};

const CLAIM: &str = include_str!("claim.lua");
const COMPLETE: &str = include_str!("complete.lua");
const RELEASE: &str = include_str!("release.lua");
const RENEW: &str = include_str!("renew.lua");
const DEFAULT_PREFIX: &str = "palisade:idem:";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a key's fencing counter outlives the lease it numbered.
const FENCE_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);

/// Idempotency records in Redis, shared by every instance that uses the same
/// Redis and prefix.
///
/// - **One round trip per step**: a claim is one script that returns the
///   existing record (a replay needs nothing more) or claims the key; a
///   completion is one compare-token-and-set script; a renewal one
///   compare-token-and-`PEXPIRE` script; a release is one script. Each
///   script checks its numbers (lease, TTL) before it writes anything. Each runs by `EVALSHA` on the node that holds its keys; after
///   `NOSCRIPT` (a `SCRIPT FLUSH`, a restarted or new node) it is sent again
///   as `EVAL`, which runs it and caches it on that node.
/// - **One Redis or a Redis Cluster**: [`connect`](Self::connect) and
///   [`new`](Self::new) take one Redis, [`connect_cluster`](Self::connect_cluster)
///   a cluster, where each step goes to the master that serves its key's
///   slot, following `MOVED` and `ASK`.
/// - **Records**: a response's trailers are a field of their own, written
///   only when the body ended with trailers, so a record without them is
///   the same as before trailers were kept, and one written before reads as
///   a response without trailers.
/// - **Keys, one slot per record**: `<prefix>{<hash>}` for the record (a
///   hash with fields) and `<prefix>{<hash>}:fence` for its fencing
///   counter; the hash tag `{<hash>}` puts both in one cluster slot, so the
///   claim script, which touches both, never meets `CROSSSLOT`. `<hash>` is
///   the layer's SHA-256 of caller key, method, path and key, so no
///   caller identity is stored. (A key given to the store directly that is
///   empty or starts with `}` or `\` gets a leading `\`, so its tag is
///   never empty; the prefix must not contain braces.)
/// - **Bounded**: each step gives up after [`timeout`](Self::timeout)
///   (default 1 s, at most [`MAX_STORE_TIMEOUT`](super::MAX_STORE_TIMEOUT))
///   with [`StoreError::Timeout`]; the layer then fails closed
///   (503) or open, as configured. On a cluster, a dead master fails only
///   the steps whose records it holds, and serves them again once it is
///   back (run the cluster with `cluster-require-full-coverage no` if a
///   master may have no replica to take over, or every node refuses every
///   key once it is marked failed).
/// - **Metrics** (feature `metrics`): every step records
///   `palisade_store_duration_seconds` and every failed one (a timeout
///   too) `palisade_store_errors_total`, labelled `layer="idempotency"`,
///   `store="redis"` or `"redis_cluster"` and `op="claim"`, `"renew"`,
///   `"complete"` or `"release"`.
/// - **Replication, opt-in**: Redis replicates asynchronously, so a failover
///   can lose a claim or a completion it acknowledged.
///   [`wait_for_replicas`](Self::wait_for_replicas) makes each claim and
///   completion wait until replicas have it (`WAIT`); see the module docs
///   for what that does and does not promise.
///
/// ```no_run
/// use palisade::idempotency::{IdempotencyLayer, RedisStore};
///
/// # async fn run() -> Result<(), palisade::idempotency::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let layer = IdempotencyLayer::with_store(store);
/// # Ok(()) }
/// ```
///
/// On a Redis Cluster, list a few of its nodes:
///
/// ```no_run
/// use palisade::idempotency::{IdempotencyLayer, RedisStore};
///
/// # async fn run() -> Result<(), palisade::idempotency::StoreError> {
/// let store = RedisStore::connect_cluster(&[
///     "redis://10.0.0.1:6379/",
///     "redis://10.0.0.2:6379/",
///     "redis://10.0.0.3:6379/",
/// ])
/// .await?;
/// let layer = IdempotencyLayer::with_store(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
    replication: Option<Replication>,
}

/// How many replicas must acknowledge a write, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
struct Replication {
    replicas: NonZeroU32,
    timeout: Duration,
}

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    renew: Script,
    #[cfg(feature = "metrics")]
    metrics: [OpMetrics; 4],
}

/// A store step, for its metrics.
#[derive(Clone, Copy)]
enum Op {
    Claim,
    Complete,
    Release,
    Renew,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.conn.label())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
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
    /// fails, within [`timeout`](Self::timeout), only the steps whose keys
    /// it serves. `MOVED` and `ASK` are followed; the slot map is read
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
        Self {
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
                #[cfg(feature = "metrics")]
                metrics: ["claim", "complete", "release", "renew"]
                    .map(|op| OpMetrics::new("idempotency", conn.label(), op)),
            }),
            conn,
            prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            replication: None,
        }
    }

    /// Sets the prefix of every key (default `palisade:idem:`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// Sets the bound on one store step (default 1 s), clamped to between
    /// 1 ms and [`MAX_STORE_TIMEOUT`](super::MAX_STORE_TIMEOUT) (one minute).
    ///
    /// The layer's completion runs on a task of its own within this bound,
    /// so a client that hangs up cannot cut it short.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), MAX_STORE_TIMEOUT);
        self
    }

    /// After each claim and each completion that wrote, waits until
    /// `replicas` replicas of the node that holds the record acknowledge the
    /// write (`WAIT replicas timeout` on the connection that wrote it), up
    /// to `timeout`. Off by default.
    ///
    /// Fewer acknowledgements in time is [`StoreError::NotReplicated`]: for
    /// a claim, the layer then answers as its
    /// [`OnStoreError`](crate::idempotency::OnStoreError) says, and the claim
    /// is released first, so a retry is not held off until the lease
    /// expires; for a completion, the response still goes to the client and
    /// the failure is logged. Each such step costs one more round trip plus
    /// the replicas' acknowledgement, and is bounded by this `timeout` plus
    /// the store's [`timeout`](Self::timeout).
    ///
    /// `WAIT` blocks the connection it is sent on until the replicas answer
    /// or `timeout` passes, and every other step of this store (claims,
    /// renewals, releases) queues behind it: keep `timeout` short (tens of
    /// milliseconds), and give this store a connection of its own
    /// ([`connect`](Self::connect) opens one) rather than one shared with
    /// other stores. A replica that lags for longer than a lease can then
    /// delay renewals until leases are lost.
    ///
    /// This narrows the window in which a failover loses an acknowledged
    /// write; it does not close it (`WAIT` is not consensus): see
    /// "Durability under Redis failover" in the
    /// [module docs](crate::idempotency).
    ///
    /// ```no_run
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// use palisade::idempotency::RedisStore;
    ///
    /// # async fn run() -> Result<(), palisade::idempotency::StoreError> {
    /// let store = RedisStore::connect("redis://10.0.0.1:6379/")
    ///     .await?
    ///     .wait_for_replicas(NonZeroU32::MIN, Duration::from_millis(50));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn wait_for_replicas(mut self, replicas: NonZeroU32, timeout: Duration) -> Self {
        let timeout = timeout.clamp(Duration::from_millis(1), super::MAX_STORE_TIMEOUT);
        self.replication = Some(Replication { replicas, timeout });
        self
    }

    /// The Redis key of the record of `key` (its fencing counter is this
    /// plus `:fence`, in the same slot).
    pub fn record_key(&self, key: &str) -> String {
        format!("{}{{{}}}", self.prefix, hash_tag(key))
    }

    async fn bounded<T>(
        &self,
        op: Op,
        step: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        #[cfg(feature = "metrics")]
        let sent = Instant::now();
        let result = match tokio::time::timeout(self.timeout, step).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        #[cfg(feature = "metrics")]
        self.scripts.metrics[op as usize].record(sent.elapsed(), result.is_err());
        #[cfg(not(feature = "metrics"))]
        let _ = op; // only the metrics tell the steps apart
        result
    }
}

impl RedisStore {
    /// The opt-in replication step after a write to `record`: `WAIT` on the
    /// connection (on a cluster, the master) that ran the script, so it
    /// counts that write. (A reconnect in between would make `WAIT` count
    /// nothing on a fresh connection: one more way this narrows the window
    /// without closing it.)
    async fn replicated(&self, record: &str) -> Result<(), StoreError> {
        let Some(replication) = self.replication else {
            return Ok(());
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replication.replicas.get())
            .arg(millis(replication.timeout));
        let acked = async {
            match &self.conn {
                Conn::Single(conn) => wait.query_async::<i64>(&mut conn.clone()).await,
                Conn::Cluster(cluster) => cluster
                    .query(record.as_bytes(), &wait)
                    .await
                    .and_then(|v| Ok(redis::from_redis_value::<i64>(v)?)),
            }
        };
        // The server gives up after its timeout; this bounds a dead link.
        let bound = self.timeout.saturating_add(replication.timeout);
        let acked = match tokio::time::timeout(bound, acked).await {
            Ok(acked) => acked?,
            Err(_) => return Err(StoreError::Timeout(bound)),
        };
        let wanted = replication.replicas.get();
        if acked < i64::from(wanted) {
            return Err(StoreError::NotReplicated {
                acked: u32::try_from(acked.max(0)).unwrap_or(0),
                wanted,
                timeout: replication.timeout,
            });
        }
        Ok(())
    }
}

/// `d` in whole milliseconds, at least 1; callers clamp `d` to a maximum
/// first, so it stays far below what `PEXPIRE` accepts.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn corrupt(what: &str, value: &Value) -> StoreError {
    StoreError::Protocol(format!("{what}: {value:?}"))
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// Headers as `[[name, [byte, ...]], ...]`: values may hold bytes that are
/// not UTF-8, and JSON is already a dependency.
fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    serde_json::to_vec(&pairs).expect("strings and byte arrays serialise")
}

fn decode_headers(raw: &[u8]) -> Option<HeaderMap> {
    let pairs: Vec<(String, Vec<u8>)> = serde_json::from_slice(raw).ok()?;
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(&value).ok()?,
        );
    }
    Some(headers)
}

fn parse_claim(reply: &Value, token: u64) -> Result<Claim, StoreError> {
    let Value::Array(items) = reply else {
        return Err(corrupt("claim reply", reply));
    };
    let state = items
        .first()
        .and_then(bytes)
        .ok_or_else(|| corrupt("claim reply", reply))?;
    if state == b"claimed" {
        let fence = items
            .get(1)
            .and_then(int)
            .and_then(|n| u64::try_from(n).ok());
        let fence = fence.ok_or_else(|| corrupt("fence", reply))?;
        return Ok(Claim::Claimed(Lease { token, fence }));
    }
    let fingerprint = items
        .get(1)
        .and_then(bytes)
        .and_then(Fingerprint::from_slice)
        .ok_or_else(|| corrupt("fingerprint", reply))?;
    match state {
        b"i" => {
            let pttl = items.get(2).and_then(int).unwrap_or(0);
            Ok(Claim::Existing(Record::InFlight {
                fingerprint,
                lease_remaining: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            }))
        }
        b"n" => Ok(Claim::Existing(Record::Completed {
            fingerprint,
            response: None,
        })),
        b"c" => {
            let status = items
                .get(3)
                .and_then(int)
                .and_then(|n| u16::try_from(n).ok())
                .and_then(|n| StatusCode::from_u16(n).ok())
                .ok_or_else(|| corrupt("status", reply))?;
            let headers = items
                .get(4)
                .and_then(bytes)
                .and_then(decode_headers)
                .ok_or_else(|| corrupt("headers", reply))?;
            let body = items
                .get(5)
                .and_then(bytes)
                .ok_or_else(|| corrupt("body", reply))?;
            // Absent (nil, or no seventh item from a script cached before
            // trailers were kept): the body had no trailers.
            let trailers = match items.get(6) {
                None | Some(Value::Nil) => None,
                Some(raw) => Some(
                    bytes(raw)
                        .and_then(decode_headers)
                        .ok_or_else(|| corrupt("trailers", reply))?,
                ),
            };
            let mut response = StoredResponse::new(status, headers, Bytes::copy_from_slice(body));
            response.trailers = trailers;
            Ok(Claim::Existing(Record::Completed {
                fingerprint,
                response: Some(Arc::new(response)),
            }))
        }
        _ => Err(corrupt("state", reply)),
    }
}

impl Store for RedisStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let lease = lease.min(MAX_LEASE);
        let record = self.record_key(key);
        let mut invocation = self.scripts.claim.call();
        invocation
            .key(&record)
            .key(format!("{record}:fence"))
            .arg(&fingerprint.as_bytes()[..])
            .arg(token)
            .arg(millis(lease))
            .arg(millis(lease + FENCE_MARGIN));
        let reply: Value = self
            .bounded(Op::Claim, invocation.invoke(&self.conn))
            .await?;
        let claim = parse_claim(&reply, token)?;
        if let Claim::Claimed(lease) = claim
            && let Err(e) = self.replicated(&record).await
        {
            // Refused, nothing ran: free the key for the retry at once. If
            // this fails too, the claim frees itself when its lease expires.
            let _ = self.release(key, lease.token).await;
            return Err(e);
        }
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.complete.call();
        invocation
            .key(self.record_key(key))
            .arg(lease.token)
            .arg(millis(ttl.min(MAX_TTL)));
        match &completion {
            Completion::Retained(response) => invocation
                .arg("c")
                .arg(response.status.as_u16())
                .arg(encode_headers(&response.headers))
                .arg(&response.body[..])
                .arg(
                    response
                        .trailers
                        .as_ref()
                        .map_or_else(Vec::new, encode_headers),
                ),
            Completion::NotRetained => invocation.arg("n").arg(0).arg("[]").arg("").arg(""),
        };
        let stored: i64 = self
            .bounded(Op::Complete, invocation.invoke(&self.conn))
            .await?;
        if stored == 1 && self.replication.is_some() {
            self.replicated(&self.record_key(key)).await?;
        }
        Ok(stored == 1)
    }

    async fn renew(&self, key: &str, token: u64, lease: Duration) -> Result<bool, StoreError> {
        let lease = lease.min(MAX_LEASE);
        let record = self.record_key(key);
        let mut invocation = self.scripts.renew.call();
        invocation
            .key(&record)
            .key(format!("{record}:fence"))
            .arg(token)
            .arg(millis(lease))
            .arg(millis(lease + FENCE_MARGIN));
        let renewed: i64 = self
            .bounded(Op::Renew, invocation.invoke(&self.conn))
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, key: &str, token: u64) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.release.call();
        invocation.key(self.record_key(key)).arg(token);
        let released: i64 = self
            .bounded(Op::Release, invocation.invoke(&self.conn))
            .await?;
        Ok(released == 1)
    }
}
