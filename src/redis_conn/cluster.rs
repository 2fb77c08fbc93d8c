//! A Redis Cluster client for the stores' scripts: one reconnecting
//! connection per master, the slot map from `CLUSTER SLOTS`, `MOVED` and
//! `ASK` followed per call.
//!
//! Not redis-rs's cluster client: that one drives every node from one task
//! and holds every request back while it refreshes its slot map, so a dead
//! master delays the decisions of the healthy ones, and under traffic to a
//! dead master its refresh can wait forever on a lock that a request it no
//! longer polls was granted (seen with redis 1.8: every slot stalled until
//! the process restarted). Here each master has its own connection, no call
//! waits for a refresh, and refreshes run in the background.
//!
//! A redirection to a master the slot map does not know yet (one that joined
//! during a resharding, or the target of an `ASK`, which no refresh adds
//! while the slot migrates) opens one connection to it, once, for every call
//! that needs it: the first call starts the attempt in a task of its own, the
//! others wait for that attempt and share its connection, and the next
//! refresh that lists the master keeps it. Without that, every redirected
//! call would open a connection of its own: a connection storm at high load
//! against the very master that is taking over slots. A failed attempt is
//! forgotten as soon as it fails (the next call tries again) and fails every
//! call that waited for it; a call that gives up while it waits (the store's
//! bound) leaves the attempt to the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value,
};
use tokio::time::Instant;

const SLOTS: usize = 16384;
const UNSERVED: u16 = u16::MAX;
/// Redirections (`MOVED`, `ASK`, `TRYAGAIN`) one call follows before it
/// gives up with the last one.
const MAX_REDIRECTS: usize = 5;
/// How long a `TRYAGAIN` waits: during a slot migration, Redis refuses a
/// multi-key call whose keys are not all on one side yet.
const TRYAGAIN_WAIT: Duration = Duration::from_millis(5);
/// A bound on one `CLUSTER SLOTS` query, so a hung node cannot hold a refresh.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// The least time between two slot-map refreshes.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Masters outside the slot map that keep a connection: more than a cluster
/// adds at once, few enough that odd redirections cannot pile them up.
const MAX_NEWCOMERS: usize = 16;

/// A connection to a Redis Cluster. Clones share it.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where connection settings (credentials, database, protocol) come
    /// from, and whom to ask when no known master answers.
    seeds: Vec<ConnectionInfo>,
    map: RwLock<Arc<SlotMap>>,
    refresh: Mutex<Refresh>,
    /// Spreads `CLUSTER SLOTS` queries over the masters.
    next_query: AtomicUsize,
    /// Connections to masters that redirections named and the slot map
    /// lacks.
    newcomers: Mutex<Newcomers>,
}

/// One connection (or attempt) per address a redirection named that the
/// slot map lacks, until a refresh adds it to the map.
#[derive(Default)]
struct Newcomers {
    by_addr: HashMap<(String, u16), Newcomer>,
    /// Tells an attempt's own entry from a later one for the same address.
    next_id: u64,
}

#[derive(Clone)]
struct Newcomer {
    id: u64,
    /// The attempt, run by a task of its own: callers share its outcome,
    /// and none of them cancels it by giving up.
    conn: Shared<BoxFuture<'static, RedisResult<ConnectionManager>>>,
}

/// Where a redirected call finds its connection.
enum Found {
    Mapped(ConnectionManager),
    Newcomer(Newcomer),
}

impl Newcomers {
    /// Drops the entry of attempt `id` for `addr`, if it is still there.
    fn forget(&mut self, addr: &(String, u16), id: u64) {
        if self.by_addr.get(addr).is_some_and(|n| n.id == id) {
            self.by_addr.remove(addr);
        }
    }
}

#[derive(Default)]
struct Refresh {
    running: bool,
    last: Option<Instant>,
}

struct SlotMap {
    /// For each slot, its master's index in `nodes`, or `UNSERVED`.
    owner: Box<[u16]>,
    nodes: Vec<Node>,
}

#[derive(Clone)]
struct Node {
    host: Arc<str>,
    port: u16,
    conn: ConnectionManager,
}

impl SlotMap {
    fn empty() -> Self {
        Self {
            owner: vec![UNSERVED; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
        }
    }

    fn owner(&self, slot: u16) -> Option<&Node> {
        self.nodes.get(usize::from(self.owner[usize::from(slot)]))
    }

    fn node(&self, host: &str, port: u16) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.port == port && &*n.host == host)
    }
}

impl Cluster {
    /// Connects to the cluster that `urls` belong to: reads its slot map
    /// from the first node that answers.
    pub(crate) async fn connect<U: AsRef<str>>(urls: &[U]) -> RedisResult<Self> {
        let seeds = urls
            .iter()
            .map(|u| super::connection_info(u.as_ref()))
            .collect::<RedisResult<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a cluster needs at least one node url",
            )));
        }
        let cluster = Self {
            inner: Arc::new(Inner {
                seeds,
                map: RwLock::new(Arc::new(SlotMap::empty())),
                refresh: Mutex::default(),
                next_query: AtomicUsize::new(0),
                newcomers: Mutex::default(),
            }),
        };
        cluster.refresh().await?;
        Ok(cluster)
    }

    fn map(&self) -> Arc<SlotMap> {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends `cmd`, whose keys are all in the slot of `key`, to the master
    /// that serves it, following redirections.
    pub(crate) async fn query(&self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        let slot = key_slot(key);
        let map = self.map();
        let Some(node) = map.owner(slot) else {
            self.refresh_soon();
            return Err(RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no known master serves the slot",
                slot.to_string(),
            )));
        };
        let mut conn = node.conn.clone();
        let mut asking = false;
        let mut tries = 0;
        loop {
            let result = if asking {
                send_asking(&mut conn, cmd).await
            } else {
                conn.req_packed_command(cmd)
                    .await
                    .and_then(Value::extract_error)
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            tries += 1;
            if tries > MAX_REDIRECTS {
                return Err(err);
            }
            match err.kind() {
                ErrorKind::Server(ServerErrorKind::Moved) => {
                    self.refresh_soon();
                    // Boxed: the rare redirect's state stays out of every
                    // call's future.
                    conn = Box::pin(self.redirected(&map, err)).await?;
                    asking = false;
                }
                ErrorKind::Server(ServerErrorKind::Ask) => {
                    conn = Box::pin(self.redirected(&map, err)).await?;
                    asking = true;
                }
                ErrorKind::Server(ServerErrorKind::TryAgain) => {
                    tokio::time::sleep(TRYAGAIN_WAIT).await;
                }
                // The map may be stale (a failover, a master gone): look
                // again, for the next call.
                ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly,
                )
                | ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound => {
                    self.refresh_soon();
                    return Err(err);
                }
                _ => return Err(err),
            }
        }
    }

    /// The connection to the node a `MOVED` or `ASK` error points at.
    async fn redirected(&self, map: &SlotMap, err: RedisError) -> RedisResult<ConnectionManager> {
        let parsed = err.redirect_node().and_then(|(addr, _)| {
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse::<u16>().ok()?))
        });
        let Some((host, port)) = parsed else {
            return Err(err);
        };
        if let Some(node) = map.node(&host, port) {
            return Ok(node.conn.clone());
        }
        // A master the map does not know yet (the refresh adds it): one
        // attempt for every caller, not a connection per call.
        let addr = (host, port);
        let newcomer = match self.newcomer(&addr)? {
            Found::Mapped(conn) => return Ok(conn),
            Found::Newcomer(newcomer) => newcomer,
        };
        let result = newcomer.conn.await;
        if result.is_err() {
            // The attempt's task forgets it too, unless it was cancelled
            // (a runtime shutting down).
            self.lock_newcomers().forget(&addr, newcomer.id);
        }
        result
    }

    /// The attempt to connect to `addr`, started here unless one is known,
    /// or the connection of the map, if a refresh just added `addr`.
    fn newcomer(&self, addr: &(String, u16)) -> RedisResult<Found> {
        let mut newcomers = self.lock_newcomers();
        if let Some(newcomer) = newcomers.by_addr.get(addr) {
            return Ok(Found::Newcomer(newcomer.clone()));
        }
        // Under the lock that `install` holds while it takes entries over
        // and replaces the map: an entry gone means the map has it.
        if let Some(node) = self.map().node(&addr.0, addr.1) {
            return Ok(Found::Mapped(node.conn.clone()));
        }
        let client = self.node_client(&addr.0, addr.1)?;
        if newcomers.by_addr.len() >= MAX_NEWCOMERS {
            newcomers.by_addr.clear();
        }
        let id = newcomers.next_id;
        newcomers.next_id += 1;
        let inner = Arc::downgrade(&self.inner);
        let key = addr.clone();
        let task = tokio::spawn(async move {
            let result = ConnectionManager::new_with_config(client, super::manager_config()).await;
            if result.is_err() {
                // Before the waiters hear of it, so that a call that comes
                // after them starts a new attempt.
                if let Some(inner) = Weak::upgrade(&inner) {
                    lock(&inner.newcomers).forget(&key, id);
                }
            }
            result
        });
        let conn = task
            .map(|joined| {
                joined.unwrap_or_else(|_| {
                    Err(RedisError::from((
                        ErrorKind::Io,
                        "connecting to a redirected master was cancelled",
                    )))
                })
            })
            .boxed()
            .shared();
        let newcomer = Newcomer { id, conn };
        newcomers.by_addr.insert(addr.clone(), newcomer.clone());
        Ok(Found::Newcomer(newcomer))
    }

    fn lock_newcomers(&self) -> MutexGuard<'_, Newcomers> {
        lock(&self.inner.newcomers)
    }

    /// A lazy, reconnecting connection to `host:port`, with the seeds'
    /// settings.
    fn node_conn(&self, host: &str, port: u16) -> RedisResult<ConnectionManager> {
        let client = self.node_client(host, port)?;
        ConnectionManager::new_lazy_with_config(client, super::manager_config())
    }

    /// A client for `host:port`, with the seeds' settings.
    fn node_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        let seed = &self.inner.seeds[0];
        let mut addr = seed.addr().clone();
        match &mut addr {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                *h = host.to_owned();
                *p = port;
            }
            _ => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "cluster nodes are reached over TCP",
                )));
            }
        }
        redis::Client::open(seed.clone().set_addr(addr))
    }

    /// Starts a refresh of the slot map in the background, unless one is
    /// running or ran within `REFRESH_INTERVAL`.
    fn refresh_soon(&self) {
        {
            let mut state = self
                .inner
                .refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if state.running || state.last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return;
            }
            state.running = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Marks the refresh done even if the task is dropped midway.
            struct Done(Cluster);
            impl Drop for Done {
                fn drop(&mut self) {
                    let mut state = self
                        .0
                        .inner
                        .refresh
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    state.running = false;
                    state.last = Some(Instant::now());
                }
            }
            let done = Done(this);
            if let Err(err) = done.0.refresh().await {
                tracing::debug!(error = %err, "redis cluster slot map refresh failed");
            }
        });
    }

    /// Reads the slot map from the first master (or else seed) that answers.
    async fn refresh(&self) -> RedisResult<()> {
        let current = self.map();
        let start = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let known = (0..current.nodes.len())
            .map(|i| current.nodes[(start + i) % current.nodes.len()].clone())
            .map(|n| Ok(((*n.host).to_owned(), n.port, n.conn)));
        let seeds = self
            .inner
            .seeds
            .iter()
            .filter_map(|seed| match seed.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    Some(
                        self.node_conn(host, *port)
                            .map(|c| (host.clone(), *port, c)),
                    )
                }
                _ => None,
            });
        let mut last_err = None;
        for candidate in known.chain(seeds) {
            let (host, port, mut conn) = candidate?;
            let mut query = redis::cmd("CLUSTER");
            query.arg("SLOTS");
            let reply =
                match tokio::time::timeout(QUERY_TIMEOUT, query.query_async(&mut conn)).await {
                    Ok(reply) => reply,
                    Err(_) => Err(RedisError::from((
                        ErrorKind::Io,
                        "CLUSTER SLOTS timed out",
                        format!("{host}:{port}"),
                    ))),
                };
            match reply.and_then(|reply: Value| parse_slots(&reply, &host)) {
                Ok(ranges) => {
                    self.install(&current, ranges)?;
                    return Ok(());
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "no cluster node"))
        }))
    }

    /// Replaces the slot map, keeping the connections of masters that stay
    /// and taking over those that redirections opened to masters it adds.
    fn install(&self, current: &SlotMap, ranges: Vec<SlotRange>) -> RedisResult<()> {
        let mut newcomers = self.lock_newcomers();
        let mut next = SlotMap::empty();
        for range in ranges {
            let index = match next
                .nodes
                .iter()
                .position(|n| n.port == range.port && *n.host == *range.host)
            {
                Some(index) => index,
                None => {
                    let addr = (range.host, range.port);
                    // A connection still being opened stays with its
                    // waiters; the map opens its own (rare: a refresh
                    // that lands during the attempt).
                    let opened = newcomers
                        .by_addr
                        .remove(&addr)
                        .and_then(|n| n.conn.peek()?.as_ref().ok().cloned());
                    let (host, port) = addr;
                    let conn = match (current.node(&host, port), opened) {
                        (Some(node), _) => node.conn.clone(),
                        (None, Some(conn)) => conn,
                        (None, None) => self.node_conn(&host, port)?,
                    };
                    next.nodes.push(Node {
                        host: host.into(),
                        port,
                        conn,
                    });
                    next.nodes.len() - 1
                }
            };
            let index = u16::try_from(index).expect("fewer than 65535 masters");
            next.owner[usize::from(range.start)..=usize::from(range.end)].fill(index);
        }
        // Replaced before the entries it took over are visible as gone.
        *self
            .inner
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        drop(newcomers);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `ASKING` then `cmd`, back to back on one connection: the target of an
/// `ASK` serves a migrating slot only to a call right after `ASKING`.
async fn send_asking(conn: &mut ConnectionManager, cmd: &Cmd) -> RedisResult<Value> {
    let mut pipe = redis::pipe();
    pipe.cmd("ASKING").add_command(cmd.clone());
    let mut replies = conn.req_packed_commands(&pipe, 0, 2).await?;
    let reply = replies.pop().ok_or_else(|| {
        RedisError::from((ErrorKind::UnexpectedReturnType, "no reply after ASKING"))
    })?;
    reply.extract_error()
}

struct SlotRange {
    start: u16,
    end: u16,
    host: String,
    port: u16,
}

/// The master of each slot range in a `CLUSTER SLOTS` reply:
/// `[[start, end, [host, port, ...], replicas...], ...]`. An empty or
/// unknown (`?`) host means the node that was asked.
fn parse_slots(reply: &Value, asked: &str) -> RedisResult<Vec<SlotRange>> {
    let bad = || RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(entries) = reply else {
        return Err(bad());
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return Err(bad());
            };
            let (Some(start), Some(end), Some(Value::Array(master))) = (
                fields.first().and_then(int),
                fields.get(1).and_then(int),
                fields.get(2),
            ) else {
                return Err(bad());
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8(b.clone()).map_err(|_| bad())?,
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err(bad()),
            };
            let host = if host.is_empty() || host == "?" {
                asked.to_owned()
            } else {
                host
            };
            let port = master.get(1).and_then(int).ok_or_else(bad)?;
            if start > end || usize::from(end) >= SLOTS {
                return Err(bad());
            }
            Ok(SlotRange {
                start,
                end,
                host,
                port,
            })
        })
        .collect()
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, if not empty) or else of the
/// whole key, modulo 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

// The XMODEM variant of CRC16 is the one the cluster spec names; the crate is
// the one redis-rs itself uses for slots.
fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_redis_cluster_spec() {
        // The spec's check value, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{bar}pattern"), key_slot(b"bar"));
        assert_eq!(key_slot(b"a{bar}b:c"), key_slot(b"bar"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"{}bar"), crc16(b"{}bar") % 16384);
        assert_eq!(key_slot(b"x{bar"), crc16(b"x{bar") % 16384);
    }

    #[test]
    fn a_slots_reply_gives_each_range_its_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let ranges = parse_slots(&reply, "10.0.0.9").unwrap();
        let got: Vec<_> = ranges
            .iter()
            .map(|r| (r.start, r.end, r.host.as_str(), r.port))
            .collect();
        assert_eq!(
            got,
            [(0, 5460, "10.0.0.1", 7000), (5461, 16383, "10.0.0.9", 7001)]
        );
        assert!(parse_slots(&Value::Int(1), "h").is_err());
        let past_the_end = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16384),
            node("h", 1),
        ])]);
        assert!(parse_slots(&past_the_end, "h").is_err());
    }
}
