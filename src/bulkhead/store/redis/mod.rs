//! The fleet-wide store: leases in a Redis sorted set, behind a local gate.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::memory::MemoryStore;
use super::{Admission, LocalPermit, Refused, Store, StoreError};
use crate::load_shed::gate::Permit as GatePermit;
use crate::load_shed::{Priority, Reason};
use crate::observability::{ErrorChain, RedactedKey, redact_key};
use crate::redis_conn::{Conn, Script, hash_tag};

const ACQUIRE: &str = include_str!("acquire.lua");
const RENEW: &str = include_str!("renew.lua");
const DEFAULT_PREFIX: &str = "palisade:";

/// [`RedisStore::lease`]'s default: 10 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The longest lease [`RedisStore::lease`] takes: a year.
const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// [`RedisStore::timeout`]'s default: 50 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// [`RedisStore::retry_interval`]'s default: 25 ms.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(25);

/// A bulkhead's permits shared by every instance: at most N calls in flight
/// across the fleet, for a downstream (a partner API) that allows N
/// concurrent calls in all.
///
/// - **Two stages**: a request first takes a permit from a gate in this
///   process (the same limit and [`Queue`](crate::load_shed::Queue) as the
///   layer's), so one instance never asks Redis for more than N and its
///   waiters queue locally, by priority and in the queue's order, for at
///   most its maximum wait. Then it asks Redis for a lease: one `EVALSHA`
///   that drops expired leases and takes one if fewer than N are held. When
///   Redis refuses, the request asks again until its queue's maximum wait
///   has passed since it arrived, waking early when this
///   process gives back a lease of the same key, otherwise every
///   [`retry_interval`](Self::retry_interval). Without a queue a refusal is
///   at once ([`Reason::Full`]); a wait that ran out is [`Reason::Waited`].
///   A `NeverShed` request bypasses both stages.
/// - **Leases**: each permit is a lease of [`lease`](Self::lease) (default
///   [`DEFAULT_LEASE`]) on Redis's clock (`TIME`), so instances' clocks do
///   not matter. While held, leases are renewed every third of the lease by
///   one background task per store (started with the first lease, gone when
///   none is held or the store and its permits are dropped), one round trip
///   per key. A crashed instance's leases expire within the lease, freeing
///   its permits. A renewal that finds a lease gone (its holder ran past it,
///   say while Redis was unreachable) logs a warning; the holder goes on,
///   and the fleet may briefly run one call more than N.
/// - **Fenced**: every acquisition has its own token (a random id of this
///   process and a counter) and a release removes only that token, so a
///   holder whose lease expired and was taken by another cannot free the
///   other's permit. Dropping the permit releases the local permit at once
///   and the lease by one round trip spawned on the current runtime (with
///   none, the lease expires). A request dropped while its lease was being
///   taken gives it back the same way, so no await point leaks one.
/// - **Failures**: every round trip is bounded by [`timeout`](Self::timeout)
///   (default [`DEFAULT_TIMEOUT`]); a Redis error or timeout refuses with
///   [`Refused::Store`], and the layer's
///   [`on_store_error`](crate::bulkhead::BulkheadLayer::on_store_error)
///   decides (the bulkhead fails closed by default). An acquisition that
///   timed out may still have taken its lease: it is given back. A request
///   let through by `FailOpen` holds no lease but keeps its local permit:
///   while Redis is down, each instance still keeps to the limit on its
///   own (the fleet may run up to N per instance).
/// - **Key layout**: one sorted set per bulkhead key,
///   `<prefix>bulkhead:{<key>}` (default prefix `palisade:`), member = token,
///   score = lease expiry in ms since the epoch, with a TTL that follows its
///   latest lease. The hash tag keeps each key in one cluster slot:
///   [`connect_cluster`](Self::connect_cluster) sends every call to the
///   master that serves it. (Keys are tagged as the rate limiter's are: an
///   empty key or one starting with `}` or `\` gets a leading `\`.)
///
/// With feature `metrics`, every round trip records
/// `palisade_store_duration_seconds` and every failed one
/// `palisade_store_errors_total`, labelled `layer="bulkhead"`,
/// `store="redis"` or `"redis_cluster"`, `op="acquire"`, `"release"` or
/// `"renew"`.
///
/// ```no_run
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use palisade::bulkhead::{BulkheadLayer, RedisStore};
/// use palisade::load_shed::Queue;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // The partner allows 20 concurrent calls from all of our instances.
/// let store = RedisStore::connect("redis://127.0.0.1:6379/")
///     .await?
///     .lease(Duration::from_secs(5));
/// let layer = BulkheadLayer::with_store(store, NonZeroU32::new(20).unwrap())
///     .queue(Queue::new(64, Duration::from_millis(200))?)
///     .namespace("partner")
///     .name("partner");
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    local: MemoryStore,
    prefix: Arc<str>,
    timeout: Duration,
    lease: Duration,
    retry_interval: Duration,
}

/// What the store's clones, its permits and its renewer share.
struct Shared {
    conn: Conn,
    acquire: Script,
    renew: Script,
    held: Mutex<Held>,
    /// Told when a lease is taken, so a renewer sleeping for a longer lease
    /// (of a clone with its own [`RedisStore::lease`]) wakes in time for it.
    taken: Arc<Notify>,
    #[cfg(feature = "metrics")]
    metrics: [crate::redis_conn::OpMetrics; 3],
}

#[derive(Default)]
struct Held {
    /// Redis key -> the leases this process holds there, and who waits.
    keys: HashMap<String, KeyState>,
    renewer: Option<JoinHandle<()>>,
}

struct KeyState {
    /// The key as the layer's events show it.
    digest: RedactedKey,
    tokens: Vec<Arc<str>>,
    lease: Duration,
    timeout: Duration,
    /// Woken when a lease of this key is given back.
    released: Arc<Notify>,
}

impl KeyState {
    fn new(digest: RedactedKey) -> Self {
        Self {
            digest,
            tokens: Vec::new(),
            lease: DEFAULT_LEASE,
            timeout: DEFAULT_TIMEOUT,
            released: Arc::new(Notify::new()),
        }
    }

    fn unused(&self) -> bool {
        self.tokens.is_empty() && Arc::strong_count(&self.released) == 1
    }
}

#[cfg(feature = "metrics")]
const ACQUIRE_OP: usize = 0;
#[cfg(feature = "metrics")]
const RELEASE_OP: usize = 1;
#[cfg(feature = "metrics")]
const RENEW_OP: usize = 2;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(feature = "metrics")]
    fn record(&self, op: usize, took: Duration, failed: bool) {
        self.metrics[op].record(took, failed);
    }

    /// The notifier of `key`, kept while someone waits on it.
    fn released(&self, key: &str, digest: RedactedKey) -> Arc<Notify> {
        let mut held = self.lock();
        held.keys
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(digest))
            .released
            .clone()
    }

    fn tidy(&self, key: &str) {
        let mut held = self.lock();
        if held.keys.get(key).is_some_and(KeyState::unused) {
            held.keys.remove(key);
        }
    }

    /// Gives `token`'s lease of `key` back, then wakes this process's
    /// waiters of the key.
    ///
    /// A plain `ZREM` (one atomic command, one round trip): a script would
    /// need a second round trip after `NOSCRIPT`, and a release that times
    /// out in between (Redis paused) would leave its lease to expire.
    async fn release(&self, key: &str, digest: RedactedKey, token: &str, timeout: Duration) {
        let started = Instant::now();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(key).arg(token);
        let result = bounded(timeout, async {
            Ok(self.conn.query(key.as_bytes(), &cmd).await.map(drop)?)
        })
        .await;
        #[cfg(feature = "metrics")]
        self.record(RELEASE_OP, started.elapsed(), result.is_err());
        #[cfg(not(feature = "metrics"))]
        let _ = started;
        if let Err(error) = result {
            tracing::debug!(
                key = %digest,
                error = %ErrorChain(&error),
                "bulkhead lease not released, it will expire"
            );
        }
        let notify = self.lock().keys.get(key).map(|k| k.released.clone());
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

/// Gives a lease back on the current runtime, if there is one (otherwise
/// it expires).
fn spawn_release(
    shared: Arc<Shared>,
    key: String,
    digest: RedactedKey,
    token: Arc<str>,
    timeout: Duration,
) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            shared.release(&key, digest, &token, timeout).await;
            shared.tidy(&key);
        });
    }
}

/// A random id of this process, so tokens of different instances differ.
fn process_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
    })
}

fn next_token() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}-{n:x}", process_id()).into()
}

impl RedisStore {
    /// Connects to `url` with a reconnecting [`ConnectionManager`], tuned as
    /// [`crate::redis_conn::connect`] tunes it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(crate::redis_conn::connect(url).await?))
    }

    /// Uses `conn` (clones of a `ConnectionManager` share one connection;
    /// give it `TCP_NODELAY`, as [`crate::redis_conn::connect`] does).
    pub fn new(conn: ConnectionManager) -> Self {
        Self::with_conn(Conn::Single(conn))
    }

    /// Connects to the Redis Cluster that `urls` belong to (one reachable
    /// node is enough) and reads its slot map; each key's calls go to the
    /// master that serves its slot, following `MOVED` and `ASK`.
    pub async fn connect_cluster<U: AsRef<str>>(urls: &[U]) -> Result<Self, StoreError> {
        Ok(Self::with_conn(Conn::Cluster(
            crate::redis_conn::Cluster::connect(urls).await?,
        )))
    }

    fn with_conn(conn: Conn) -> Self {
        Self {
            shared: Arc::new(Shared {
                #[cfg(feature = "metrics")]
                metrics: ["acquire", "release", "renew"]
                    .map(|op| crate::redis_conn::OpMetrics::new("bulkhead", conn.label(), op)),
                conn,
                acquire: Script::new(ACQUIRE),
                renew: Script::new(RENEW),
                held: Mutex::default(),
                taken: Arc::new(Notify::new()),
            }),
            local: MemoryStore::new(),
            prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            lease: DEFAULT_LEASE,
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// Sets the prefix of every key (default `palisade:`); it must not
    /// contain braces, or its hash tag would take over.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// Sets how long Redis may take to answer one round trip (default
    /// [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long a lease lasts unless renewed (default
    /// [`DEFAULT_LEASE`], at least 3 ms, at most a year): how long a
    /// crashed instance's permits stay taken. Held leases are renewed every
    /// third of it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        // Past a year, the expiry in ms overflows what Redis takes as an
        // integer (`PEXPIRE` refuses it, and every acquisition fails).
        self.lease = lease.clamp(Duration::from_millis(3), MAX_LEASE);
        self
    }

    /// Sets how often a request refused by Redis asks again, unless this
    /// process gives back a lease of its key first (default
    /// [`DEFAULT_RETRY_INTERVAL`]).
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The Redis key of the leases of `key` (a key as the layer names it,
    /// namespace included).
    pub fn key(&self, key: &str) -> String {
        format!("{}bulkhead:{{{}}}", self.prefix, hash_tag(key))
    }

    /// Permits of `key` held by this process now (leases and local permits
    /// on their way to one).
    pub fn in_flight(&self, key: &str) -> u32 {
        self.local.in_flight(key)
    }

    /// Requests of `key` waiting in this process's queue now.
    pub fn queued(&self, key: &str) -> usize {
        self.local.queued(key)
    }

    /// One acquisition round trip: `Ok(None)` taken, `Ok(Some(wait))` refused
    /// until the earliest lease expires.
    async fn try_lease(
        &self,
        key: &str,
        token: &str,
        limit: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let started = Instant::now();
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let mut call = self.shared.acquire.call();
        call.key(key).arg(token).arg(limit).arg(lease_ms);
        let result: Result<i64, StoreError> = bounded(self.timeout, async {
            Ok(call.invoke(&self.shared.conn).await?)
        })
        .await;
        #[cfg(feature = "metrics")]
        self.shared
            .record(ACQUIRE_OP, started.elapsed(), result.is_err());
        #[cfg(not(feature = "metrics"))]
        let _ = started;
        match result? {
            0 => Ok(None),
            ms if ms > 0 => Ok(Some(Duration::from_millis(ms.cast_unsigned()))),
            other => Err(StoreError::Protocol(format!("acquire answered {other}"))),
        }
    }

    /// Records a taken lease for the renewer, starting it if none runs.
    fn hold(&self, key: &str, digest: RedactedKey, token: Arc<str>) {
        let mut held = self.shared.lock();
        let state = held
            .keys
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(digest));
        state.tokens.push(token);
        state.lease = self.lease;
        state.timeout = self.timeout;
        // A renewer of a runtime that has shut down is finished too.
        if held.renewer.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                held.renewer = Some(runtime.spawn(renew(
                    Arc::downgrade(&self.shared),
                    self.shared.taken.clone(),
                )));
            }
        } else {
            // The running renewer may sleep for a longer lease than this one.
            self.shared.taken.notify_one();
        }
    }
}

/// Renews every lease this process holds, every third of the shortest
/// lease, one round trip per key; ends when nothing is held or the store is
/// gone.
async fn renew(shared: Weak<Shared>, taken: Arc<Notify>) {
    let mut last = Instant::now();
    loop {
        let period = {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let mut held = strong.lock();
            let Some(shortest) = held
                .keys
                .values()
                .filter(|k| !k.tokens.is_empty())
                .map(|k| k.lease)
                .min()
            else {
                // Under the lock that `hold` takes: a lease taken after this
                // starts a new renewer.
                held.renewer = None;
                return;
            };
            shortest / 3
        };
        // A lease taken meanwhile may be shorter: look again, keeping the
        // renewal due since the last one.
        tokio::select! {
            () = tokio::time::sleep_until(last + period) => {}
            () = taken.notified() => continue,
        }
        last = Instant::now();
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let batch: Vec<_> = strong
            .lock()
            .keys
            .iter()
            .filter(|(_, k)| !k.tokens.is_empty())
            .map(|(key, k)| (key.clone(), k.digest, k.tokens.clone(), k.lease, k.timeout))
            .collect();
        // Every key at once: one slow key does not delay the others' renewal.
        let renewals = batch
            .into_iter()
            .map(|(key, digest, tokens, lease, timeout)| {
                renew_key(&strong, key, digest, tokens, lease, timeout)
            });
        futures::future::join_all(renewals).await;
    }
}

/// Renews this process's leases of one key; forgets those found gone.
async fn renew_key(
    shared: &Shared,
    key: String,
    digest: RedactedKey,
    tokens: Vec<Arc<str>>,
    lease: Duration,
    timeout: Duration,
) {
    let started = Instant::now();
    let mut call = shared.renew.call();
    call.key(&key)
        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
    for token in &tokens {
        call.arg(&**token);
    }
    let result: Result<Vec<String>, StoreError> =
        bounded(timeout, async { Ok(call.invoke(&shared.conn).await?) }).await;
    #[cfg(feature = "metrics")]
    shared.record(RENEW_OP, started.elapsed(), result.is_err());
    #[cfg(not(feature = "metrics"))]
    let _ = started;
    match result {
        Ok(gone) if !gone.is_empty() => {
            tracing::warn!(
                key = %digest,
                lost = gone.len(),
                "bulkhead lease expired while held: its holder ran past its lease"
            );
            let mut held = shared.lock();
            if let Some(state) = held.keys.get_mut(&key) {
                state.tokens.retain(|t| !gone.iter().any(|g| **g == **t));
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(
            key = %digest,
            error = %ErrorChain(&error),
            "bulkhead leases not renewed"
        ),
    }
}

/// A lease being taken: given back if the acquisition stops before it is
/// known to be refused (dropped, or failed after the script may have run).
struct Attempt<'a> {
    store: &'a RedisStore,
    key: &'a str,
    digest: RedactedKey,
    token: &'a Arc<str>,
    armed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.armed {
            spawn_release(
                self.store.shared.clone(),
                self.key.to_owned(),
                self.digest,
                self.token.clone(),
                self.store.timeout,
            );
        }
    }
}

/// Stops waiting on a key's notifier: forgets the key if nothing else
/// needs it.
struct Waiting<'a> {
    shared: &'a Shared,
    key: &'a str,
    released: Option<Arc<Notify>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.released.take().is_some() {
            self.shared.tidy(self.key);
        }
    }
}

impl Store for RedisStore {
    type Permit = RedisPermit;

    async fn acquire(&self, admission: Admission) -> Result<RedisPermit, Refused> {
        let started = Instant::now();
        let gate = self
            .local
            .gate(&admission.key, admission.limit.get(), admission.queue);
        let local = gate
            .acquire(admission.priority)
            .await
            .map_err(Refused::Shed)?;
        if admission.priority == Priority::NeverShed {
            return Ok(RedisPermit {
                lease: None,
                _local: local,
            });
        }
        // Without a queue, refused at once; with one, until its maximum
        // wait (a wait too long for an `Instant` is no bound, as the local
        // gate has it).
        let until = admission.queue.map(|q| started.checked_add(q.max_wait));
        let key = self.key(&admission.key);
        let digest = redact_key(&admission.key);
        let token = next_token();
        let mut waiting = Waiting {
            shared: &self.shared,
            key: &key,
            released: None,
        };
        loop {
            let released = waiting
                .released
                .get_or_insert_with(|| self.shared.released(&key, digest))
                .clone();
            let notified = released.notified();
            tokio::pin!(notified);
            // Registered before asking, so a release during the round trip
            // is not missed.
            notified.as_mut().enable();
            let mut attempt = Attempt {
                store: self,
                key: &key,
                digest,
                token: &token,
                armed: true,
            };
            let result = self.try_lease(&key, &token, admission.limit.get()).await;
            // A failed round trip may still have taken the lease.
            attempt.armed = result.is_err();
            drop(attempt);
            let expires = match result {
                Ok(expires) => expires,
                Err(error) => {
                    return Err(Refused::Store {
                        error,
                        local: Some(LocalPermit::new(local)),
                    });
                }
            };
            let Some(expires) = expires else {
                self.hold(&key, digest, token.clone());
                return Ok(RedisPermit {
                    lease: Some(Lease {
                        shared: self.shared.clone(),
                        key: key.clone(),
                        digest,
                        token,
                        timeout: self.timeout,
                    }),
                    _local: local,
                });
            };
            let Some(until) = until else {
                return Err(Refused::Shed(Reason::Full));
            };
            let now = Instant::now();
            if until.is_some_and(|until| now >= until) {
                return Err(Refused::Shed(Reason::Waited));
            }
            let wake = now + self.retry_interval.min(expires);
            let wake = until.map_or(wake, |until| wake.min(until));
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn set_limit(&self, namespace: &str, limit: NonZeroU32) {
        // The local gates; Redis gets the limit with each lease taken.
        self.local.set_limit(namespace, limit);
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// A held permit of a [`RedisStore`]: a local permit and, unless the
/// request was `NeverShed`, a lease in Redis. Dropping it releases both: the
/// local permit at once, the lease by a round trip spawned on the current
/// runtime (with none, the lease expires).
pub struct RedisPermit {
    lease: Option<Lease>,
    _local: GatePermit,
}

struct Lease {
    shared: Arc<Shared>,
    key: String,
    digest: RedactedKey,
    token: Arc<str>,
    timeout: Duration,
}

impl RedisPermit {
    /// This permit's fencing token: unique to the acquisition, the member
    /// of its lease in Redis. `None` for a `NeverShed` request.
    pub fn token(&self) -> Option<&str> {
        self.lease.as_ref().map(|l| &*l.token)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut held = self.shared.lock();
            if let Some(state) = held.keys.get_mut(&self.key) {
                state.tokens.retain(|t| !Arc::ptr_eq(t, &self.token));
            }
        }
        spawn_release(
            self.shared.clone(),
            std::mem::take(&mut self.key),
            self.digest,
            self.token.clone(),
            self.timeout,
        );
    }
}

impl fmt::Debug for RedisPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPermit")
            .field("key", &self.lease.as_ref().map(|l| &l.key))
            .field("token", &self.token())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.shared.conn.label())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("retry_interval", &self.retry_interval)
            .finish_non_exhaustive()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_name_the_process() {
        let (a, b) = (next_token(), next_token());
        assert_ne!(a, b);
        let prefix = format!("{:016x}-", process_id());
        assert!(a.starts_with(&prefix) && b.starts_with(&prefix));
    }
}
