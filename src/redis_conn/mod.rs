//! The one way the Redis stores connect, so they reconnect alike; the
//! connection they hold (one Redis or a Redis Cluster); the scripts they run
//! on it; the hash tags that keep one decision's keys in one cluster slot.
//!
//! Public only for [`connect`]: one tuned connection that several stores can
//! share (`RedisStore::new(conn.clone())` in `rate_limit` and `idempotency`).
// The circuit breaker alone uses one Redis, not a cluster.
#![cfg_attr(
    not(any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")),
    allow(dead_code)
)]

use std::borrow::Cow;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{
    Arg, Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisResult,
    ServerErrorKind, ToRedisArgs, Value,
};

mod cluster;

pub(crate) use self::cluster::Cluster;
// The rate limiter's batches group their keys by slot.
#[cfg(feature = "rate-limit")]
pub(crate) use self::cluster::key_slot;

/// A reconnecting, multiplexed connection to `url`, tuned as the stores'
/// own `RedisStore::connect` tunes theirs: hand clones of it to several
/// stores so they share one connection.
///
/// Connecting gives up after a second and reconnects with a short backoff
/// (20 ms growing to 500 ms), so a store recovers soon after Redis is back.
/// `TCP_NODELAY` is set (see below). There is no response timeout here:
/// each store bounds its own calls.
///
/// ```no_run
/// # async fn run() -> redis::RedisResult<()> {
/// let conn = palisade::redis_conn::connect("redis://127.0.0.1:6379/").await?;
/// let limits = palisade::rate_limit::RedisStore::new(conn.clone());
/// let keys = palisade::idempotency::RedisStore::new(conn);
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(
        redis::Client::open(connection_info(url)?)?,
        manager_config(),
    )
    .await
}

/// The connection settings of `url`, with `TCP_NODELAY`: redis-rs leaves
/// Nagle's algorithm on, which holds every command written while another
/// is unacknowledged until the ACK comes back, a whole round trip later
/// (up to 40 ms of delayed ACK on a quiet link): concurrent decisions on a
/// multiplexed connection to a distant Redis then take two round trips.
pub(crate) fn connection_info(url: &str) -> RedisResult<ConnectionInfo> {
    Ok(url
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(None)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500))
}

/// The connection of a Redis store: one Redis or a Redis Cluster. Clones
/// share the underlying connections.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Cluster),
}

impl Conn {
    /// The `store` label of this connection's metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Single(_) => "redis",
            Self::Cluster(_) => "redis_cluster",
        }
    }

    /// Sends `cmd`, whose keys all share the slot of `key`; on a cluster,
    /// to the master that serves that slot.
    pub(crate) async fn query(&self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Self::Cluster(cluster) => cluster.query(key, cmd).await,
        }
    }
}

/// A Lua script, run by `EVALSHA` on the node that serves its keys.
#[derive(Debug)]
pub(crate) struct Script {
    code: &'static str,
    hash: String,
}

impl Script {
    pub(crate) fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call of this script, to fill with keys and arguments.
    pub(crate) fn call(&self) -> Call<'_> {
        Call {
            script: self,
            keys: Cmd::new(),
            args: Cmd::new(),
        }
    }
}

/// One call of a [`Script`]: its keys (all in one slot) and arguments.
///
/// Each list is one buffer (a [`Cmd`] used as a list of arguments), not a
/// `Vec` per argument: a batch of decisions makes a handful of allocations,
/// not one for each key and number.
pub(crate) struct Call<'a> {
    script: &'a Script,
    keys: Cmd,
    args: Cmd,
}

impl Call<'_> {
    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.arg(key);
        self
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.arg(arg);
        self
    }

    /// Runs the script by `EVALSHA`; after `NOSCRIPT` (a `SCRIPT FLUSH`, a
    /// restart, a node that never saw it), by `EVAL` with the same keys,
    /// which runs it and caches it on that same node in one round trip.
    /// (`SCRIPT LOAD` has no key: it would have to go to every master, and
    /// one dead master would then fail the reload on the healthy ones.)
    pub(crate) async fn invoke<T: FromRedisValue>(&self, conn: &Conn) -> RedisResult<T> {
        let key = match self.keys.args_iter().next() {
            Some(Arg::Simple(key)) => key,
            _ => &[][..],
        };
        let reply = match conn
            .query(key, &self.cmd("EVALSHA", &self.script.hash))
            .await
        {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                conn.query(key, &self.cmd("EVAL", self.script.code)).await
            }
            reply => reply,
        }?;
        Ok(redis::from_redis_value(reply)?)
    }

    fn cmd(&self, name: &str, script: &str) -> Cmd {
        let bytes = |arg| match arg {
            Arg::Simple(bytes) => bytes,
            // `Cmd::arg` never writes a cursor.
            _ => &[][..],
        };
        let all = || {
            self.keys
                .args_iter()
                .chain(self.args.args_iter())
                .map(bytes)
        };
        let size: usize = all().map(<[u8]>::len).sum();
        let (keys, count) = (self.keys.args_iter().len(), all().count());
        let mut cmd = Cmd::with_capacity(3 + count, name.len() + script.len() + 8 + size);
        cmd.arg(name).arg(script).arg(keys);
        for arg in all() {
            cmd.arg(arg);
        }
        cmd
    }
}

/// What goes between the braces of a hash tag for `key`: the key itself,
/// unless Redis would see an empty tag (an empty key, or one that starts
/// with `}`) and hash each whole key to a slot of its own. Those, and keys
/// that start with `\`, get a leading `\`, so no two keys share a tag text.
pub(crate) fn hash_tag(key: &str) -> Cow<'_, str> {
    if key.is_empty() || key.starts_with(['}', '\\']) {
        Cow::Owned(format!("\\{key}"))
    } else {
        Cow::Borrowed(key)
    }
}

/// The metric keys of one store operation, built once per store.
#[cfg(all(
    feature = "metrics",
    any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")
))]
#[derive(Debug)]
pub(crate) struct OpMetrics {
    duration: metrics::Key,
    errors: metrics::Key,
}

#[cfg(all(
    feature = "metrics",
    any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")
))]
impl OpMetrics {
    pub(crate) fn new(layer: &'static str, store: &'static str, op: &'static str) -> Self {
        use crate::observability::{STORE_DURATION, STORE_ERRORS, record::static_key};
        let labels = [("layer", layer), ("store", store), ("op", op)];
        Self {
            duration: static_key(STORE_DURATION, &labels),
            errors: static_key(STORE_ERRORS, &labels),
        }
    }

    /// One round trip: how long it took, and whether it failed (a timeout
    /// too).
    pub(crate) fn record(&self, took: Duration, failed: bool) {
        use crate::observability::record;
        record::histogram(&self.duration, took.as_secs_f64());
        if failed {
            record::increment(&self.errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_gets_a_tag_that_keeps_its_suffixed_keys_in_one_slot() {
        let keys = ["", "}", "}x", "a}b", "{", "{}", "\\", "\\}", "ip:192.0.2.1"];
        let mut texts = std::collections::HashSet::new();
        for key in keys {
            let tag = hash_tag(key);
            assert!(texts.insert(tag.clone().into_owned()), "{key:?} collides");
            let a = format!("p:{{{tag}}}:a:1");
            let b = format!("p:{{{tag}}}:fence");
            assert_eq!(
                cluster::key_slot(a.as_bytes()),
                cluster::key_slot(b.as_bytes()),
                "{key:?}: {a} and {b}"
            );
        }
        assert_eq!(
            hash_tag("ip:192.0.2.1"),
            "ip:192.0.2.1",
            "plain keys keep their text"
        );
        assert_eq!(hash_tag("}"), "\\}");
    }
}
