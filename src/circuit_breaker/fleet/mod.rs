//! A breaker shared across instances through Redis: the state changes each
//! instance publishes and learns, and the fleet's probe lease. See the
//! [module docs](super#shared-across-instances).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubStream};
use tokio::sync::{Notify, broadcast};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::breaker::Breaker;
use super::state::{Reason, State, Transition};
use crate::observability::ErrorChain;
use crate::redis_conn::{Conn, Script, hash_tag};
use crate::store::StoreError;

const SCRIPT: &str = include_str!("fleet.lua");
const DEFAULT_PREFIX: &str = "palisade:";

/// [`RedisFleet::poll_interval`]'s default: 1 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// [`RedisFleet::timeout`]'s default: 250 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// The shortest wait an instance keeps to after the fleet refused it the
/// probe lease, so a lease about to expire does not turn every call into a
/// round trip.
const MIN_REMOTE_WAIT: Duration = Duration::from_millis(10);

/// Where a [`CircuitBreakerLayer`](super::CircuitBreakerLayer) shares its
/// state with the other instances of a service: one Redis (not a Redis
/// Cluster), given to [`CircuitBreakerLayer::shared`](super::CircuitBreakerLayer::shared).
///
/// Clones share the connections; one `RedisFleet` serves any number of
/// breakers, each under its [`Config::name`](super::Config::name). Each
/// shared breaker runs one background task with a subscriber connection of
/// its own; commands go through the shared multiplexed connection.
///
/// See the [module docs](super#shared-across-instances) for the design and
/// an example.
#[derive(Clone)]
pub struct RedisFleet {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    poll_interval: Duration,
    timeout: Duration,
}

impl fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleet")
            .field("prefix", &self.prefix)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisFleet {
    /// Connects to `url` with a reconnecting [`ConnectionManager`], tuned as
    /// [`crate::redis_conn::connect`] tunes it; the subscriber connections
    /// open to the same URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(crate::redis_conn::connection_info(url)?)?;
        let conn = crate::redis_conn::connect(url).await?;
        Ok(Self::new(client, conn))
    }

    /// Uses `conn` for commands and `client` (the same Redis) for the
    /// subscriber connections.
    pub fn new(client: redis::Client, conn: ConnectionManager) -> Self {
        Self {
            client,
            conn,
            prefix: DEFAULT_PREFIX.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the prefix of every key and channel (default `palisade:`); it
    /// must not contain braces.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// Sets how often each breaker reads the fleet's state (default
    /// [`DEFAULT_POLL_INTERVAL`], at least 10 ms): the bound on learning a
    /// change whose message was lost, and how soon a breaker notices that
    /// Redis is back after an outage.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Sets how long Redis may take to answer one round trip (default
    /// [`DEFAULT_TIMEOUT`]); a round trip that takes longer counts as an
    /// outage.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The Redis key of the fleet's state of the breaker named `name`: a
    /// hash with `state`, `until` and `epoch`. The probe lease is this key
    /// with `:probe` in place of `:state`; changes are published on the
    /// channel with neither suffix.
    pub fn key(&self, name: &str) -> String {
        format!("{}:state", self.channel(name))
    }

    fn channel(&self, name: &str) -> String {
        format!("{}circuit_breaker:{{{}}}", self.prefix, hash_tag(name))
    }
}

/// What a breaker and its background task share.
#[derive(Debug)]
pub(crate) struct Link {
    /// Redis answers: the fleet decides who probes. Otherwise this instance
    /// decides alone.
    up: AtomicBool,
    /// A probe lease request is on its way.
    asked: AtomicBool,
    want_probe: Notify,
    /// The settings, until the task starts (on a runtime).
    pending: Mutex<Option<RedisFleet>>,
}

impl Link {
    /// Asks the task for the probe lease, once until it answers; `false`
    /// while Redis is out of reach.
    pub(crate) fn ask_probe(&self) -> bool {
        if !self.up.load(Ordering::Acquire) {
            return false;
        }
        if !self.asked.swap(true, Ordering::AcqRel) {
            self.want_probe.notify_one();
        }
        true
    }
}

/// Shares `breaker` through `fleet`, what a layer's `shared` does; a
/// breaker shared already keeps its fleet.
pub(crate) fn share(breaker: &Arc<Breaker>, fleet: RedisFleet) {
    if !attach(breaker, fleet) {
        tracing::debug!(
            layer = "circuit_breaker",
            name = breaker.observer().name(),
            "circuit breaker already shared; the new fleet is ignored"
        );
    }
}

/// Shares `breaker` through `fleet`; `false` if it is shared already.
fn attach(breaker: &Arc<Breaker>, fleet: RedisFleet) -> bool {
    let link = Arc::new(Link {
        up: AtomicBool::new(false),
        asked: AtomicBool::new(false),
        want_probe: Notify::new(),
        pending: Mutex::new(Some(fleet)),
    });
    if !breaker.link(link) {
        return false;
    }
    start(breaker);
    true
}

/// Starts the background task of a shared breaker, once, if there is a
/// runtime to run it on (otherwise the next service built tries again).
pub(crate) fn start(breaker: &Arc<Breaker>) {
    let Some(link) = breaker.fleet() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(fleet) = link
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let name = breaker.observer().name();
    let channel = fleet.channel(name);
    let task = Task {
        breaker: Arc::downgrade(breaker),
        link: link.clone(),
        name: name.into(),
        state_key: format!("{channel}:state"),
        probe_key: format!("{channel}:probe"),
        channel,
        token: next_token(),
        script: Script::new(SCRIPT),
        conn: Conn::Single(fleet.conn.clone()),
        fleet,
        seen: 0,
        sub: None,
        joined: false,
        warned: false,
        granted: None,
        #[cfg(feature = "metrics")]
        outages: crate::observability::record::key(
            crate::observability::CIRCUIT_BREAKER_FLEET_OUTAGES,
            &Arc::from(name),
            &[],
        ),
    };
    let events = breaker.subscribe();
    runtime.spawn(task.run(events).in_current_span());
}

/// A token of this breaker, unique across the fleet: a random id of the
/// process and a counter.
fn next_token() -> Arc<str> {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let id = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{id:016x}-{n:x}").into()
}

/// The fleet's state as the script reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    epoch: u64,
    state: Remote,
    /// What is left of the open wait, or of the probe lease when half-open.
    left: Duration,
    holder: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    Closed,
    Open,
    HalfOpen,
}

impl Record {
    fn parse(epoch: &str, state: &str, left: &str, holder: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Protocol(format!("fleet state {epoch} {state} {left} {holder}"));
        Ok(Self {
            epoch: epoch.parse().map_err(|_| bad())?,
            state: match state {
                "closed" => Remote::Closed,
                "open" => Remote::Open,
                "half_open" => Remote::HalfOpen,
                _ => return Err(bad()),
            },
            left: Duration::from_millis(left.parse().map_err(|_| bad())?),
            holder: holder.to_owned(),
        })
    }

    /// A published change: `<epoch> <state> <ms left> <holder>`.
    fn from_message(payload: &str) -> Result<Self, StoreError> {
        let mut parts = payload.splitn(4, ' ');
        let mut next = || parts.next().unwrap_or("");
        let (epoch, state, left, holder) = (next(), next(), next(), next());
        Self::parse(epoch, state, left, holder)
    }
}

/// The one background task of a shared breaker: publishes this instance's
/// changes, applies the fleet's, asks for the probe lease, polls, and
/// notices outages. Ends when the breaker is dropped.
struct Task {
    breaker: Weak<Breaker>,
    link: Arc<Link>,
    fleet: RedisFleet,
    name: Arc<str>,
    state_key: String,
    probe_key: String,
    channel: String,
    token: Arc<str>,
    script: Script,
    conn: Conn,
    /// The epoch of the latest fleet state applied or written here.
    seen: u64,
    sub: Option<PubSubStream>,
    /// Redis answered the latest round trip.
    joined: bool,
    /// This outage was logged (and counted).
    warned: bool,
    /// The probe lease this instance holds: when it got it, and the
    /// breaker's probe count then.
    granted: Option<(tokio::time::Instant, u64)>,
    #[cfg(feature = "metrics")]
    outages: metrics::Key,
}

async fn next_message(sub: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match sub {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(mut self, mut events: broadcast::Receiver<Transition>) {
        let mut tick = tokio::time::interval(self.fleet.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(transition) => self.on_local(transition).await,
                    // Missed changes of this instance: the fleet's state
                    // decides.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.sync(true).await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                message = next_message(&mut self.sub) => match message {
                    Some(message) => self.on_message(&message),
                    // The subscriber connection is gone: polling covers
                    // until the next tick subscribes again.
                    None => self.sub = None,
                },
                () = self.link.want_probe.notified() => self.ask_probe().await,
                _ = tick.tick() => {
                    if self.breaker.strong_count() == 0 {
                        return;
                    }
                    if self.joined {
                        if self.sub.is_none() {
                            self.subscribe().await;
                        }
                        self.sync(false).await;
                        self.release_unused_lease().await;
                    } else {
                        self.join().await;
                    }
                }
            }
        }
    }

    /// Joins (or re-joins after an outage): subscribes, then reads the
    /// fleet's state, so no change falls between the two.
    async fn join(&mut self) {
        self.subscribe().await;
        if self.sub.is_none() {
            return;
        }
        let Ok(record) = self.call("read", 0).await else {
            return;
        };
        self.joined = true;
        self.link.up.store(true, Ordering::Release);
        if std::mem::take(&mut self.warned) {
            tracing::info!(
                layer = "circuit_breaker",
                name = &*self.name,
                "shared circuit breaker re-joined the fleet: Redis answers again"
            );
        }
        self.seen = record.epoch;
        self.apply(record, true).await;
    }

    async fn subscribe(&mut self) {
        let subscribe = async {
            let mut pubsub = self.fleet.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(self.fleet.timeout, subscribe).await {
            Ok(Ok(stream)) => self.sub = Some(stream),
            Ok(Err(error)) => self.failed(&StoreError::Redis(error)),
            Err(_) => self.failed(&StoreError::Timeout(self.fleet.timeout)),
        }
    }

    /// Reads the fleet's state and applies it if it is newer (or, `full`,
    /// whatever it is).
    async fn sync(&mut self, full: bool) {
        if !self.joined {
            return;
        }
        if let Ok(record) = self.call("read", 0).await
            && (full || record.epoch > self.seen)
        {
            self.seen = self.seen.max(record.epoch);
            self.apply(record, full).await;
        }
    }

    fn on_message(&mut self, message: &redis::Msg) {
        let record = std::str::from_utf8(message.get_payload_bytes())
            .map_err(|_| StoreError::Protocol("fleet message is not UTF-8".into()))
            .and_then(Record::from_message);
        match record {
            Ok(record) if record.epoch > self.seen => {
                self.seen = record.epoch;
                self.apply_learned(&record);
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(
                layer = "circuit_breaker",
                name = &*self.name,
                error = %ErrorChain(&error),
                "shared circuit breaker ignored a message"
            ),
        }
    }

    /// Publishes a change of this instance: a trip or a failed probe opens
    /// the fleet, a successful probe closes it. Forced states and resets
    /// stay local.
    async fn on_local(&mut self, transition: Transition) {
        if !self.joined {
            return;
        }
        match (transition.to, transition.reason) {
            (
                State::Open,
                Reason::ConsecutiveFailures
                | Reason::FailureRate
                | Reason::SlowCallRate
                | Reason::ProbeFailed,
            ) => {
                let wait = transition.open_for.unwrap_or_default();
                self.publish_open(wait).await;
            }
            (State::Closed, Reason::ProbesSucceeded) => {
                if let Ok(record) = self.call("close", 0).await {
                    self.seen = self.seen.max(record.epoch);
                    if record.holder != *self.token && record.state != Remote::Closed {
                        // The lease ran out and the fleet moved on: its state
                        // wins over this instance's late probes.
                        self.apply_learned(&record);
                    }
                }
            }
            _ => {}
        }
    }

    async fn publish_open(&mut self, wait: Duration) {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if let Ok(record) = self.call("open", wait_ms).await {
            self.seen = self.seen.max(record.epoch);
        }
    }

    /// Races the other instances for the probe lease.
    async fn ask_probe(&mut self) {
        if !self.joined {
            self.link.asked.store(false, Ordering::Release);
            return;
        }
        // The breaker's probe timeout in force: a reconfiguration applies
        // from the next lease on.
        let Some(lease) = self.breaker.upgrade().map(|b| b.probe_timeout()) else {
            return;
        };
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let result = self.call("probe", lease_ms).await;
        self.link.asked.store(false, Ordering::Release);
        let Ok(record) = result else {
            return;
        };
        self.seen = self.seen.max(record.epoch);
        if record.state == Remote::HalfOpen && record.holder == *self.token {
            if let Some(breaker) = self.breaker.upgrade()
                && breaker.grant_probe()
            {
                self.granted = Some((tokio::time::Instant::now(), breaker.probes_started()));
            }
        } else {
            self.apply_learned(&record);
        }
    }

    /// Gives the probe lease back when this instance has held it for a poll
    /// interval without a call to probe with (the call that asked for it
    /// was refused): otherwise the fleet would stay open until the lease
    /// expires, a whole probe timeout, while other instances have calls.
    async fn release_unused_lease(&mut self) {
        let Some((at, probes)) = self.granted else {
            return;
        };
        let Some(breaker) = self.breaker.upgrade() else {
            return;
        };
        if breaker.state() != State::HalfOpen || breaker.probes_started() != probes {
            // Probing, or done.
            self.granted = None;
            return;
        }
        if at.elapsed() < self.fleet.poll_interval {
            return;
        }
        self.granted = None;
        if let Ok(record) = self.call("release", 0).await {
            self.seen = self.seen.max(record.epoch);
            self.apply_learned(&record);
        }
    }

    /// Applies the fleet's state to the local breaker. `full` (when joining):
    /// a breaker that opened on its own while Redis was out of reach opens
    /// the fleet, rather than closing on the fleet's word.
    async fn apply(&mut self, record: Record, full: bool) {
        if full
            && record.state == Remote::Closed
            && let Some(left) = self.breaker.upgrade().and_then(|b| b.open_remaining())
            && !left.is_zero()
        {
            self.publish_open(left.max(MIN_REMOTE_WAIT)).await;
            return;
        }
        self.apply_learned(&record);
    }

    fn apply_learned(&self, record: &Record) {
        let Some(breaker) = self.breaker.upgrade() else {
            return;
        };
        match record.state {
            Remote::Closed => breaker.remote_closed(),
            Remote::Open => breaker.remote_open(record.left.max(MIN_REMOTE_WAIT)),
            Remote::HalfOpen if record.holder == *self.token => {}
            // Another instance probes: refuse until it reports, or its lease
            // runs out.
            Remote::HalfOpen => breaker.remote_open(record.left.max(MIN_REMOTE_WAIT)),
        }
    }

    /// One round trip of the script, bounded; a failure starts an outage.
    async fn call(&mut self, op: &str, ms: u64) -> Result<Record, StoreError> {
        let mut call = self.script.call();
        call.key(&self.state_key)
            .key(&self.probe_key)
            .arg(op)
            .arg(&self.channel)
            .arg(&*self.token)
            .arg(ms);
        let result = match tokio::time::timeout(
            self.fleet.timeout,
            call.invoke::<(i64, String, String, String, String)>(&self.conn),
        )
        .await
        {
            Ok(Ok((_, epoch, state, left, holder))) => {
                Record::parse(&epoch, &state, &left, &holder)
            }
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.fleet.timeout)),
        };
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    /// Redis failed: decide alone until it answers again. Logged and
    /// counted once per outage.
    fn failed(&mut self, error: &StoreError) {
        self.joined = false;
        self.sub = None;
        self.link.up.store(false, Ordering::Release);
        self.link.asked.store(false, Ordering::Release);
        if !std::mem::replace(&mut self.warned, true) {
            #[cfg(feature = "metrics")]
            crate::observability::record::increment(&self.outages);
            tracing::warn!(
                layer = "circuit_breaker",
                name = &*self.name,
                error = %ErrorChain(error),
                "shared circuit breaker lost Redis: deciding alone until it answers again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_with_or_without_a_holder() {
        let record = Record::from_message("1733300000000001 half_open 5000 abc-1").unwrap();
        assert_eq!(record.epoch, 1_733_300_000_000_001);
        assert_eq!(record.state, Remote::HalfOpen);
        assert_eq!(record.left, Duration::from_millis(5000));
        assert_eq!(record.holder, "abc-1");
        let record = Record::from_message("7 open 30000 ").unwrap();
        assert_eq!((record.state, record.holder.as_str()), (Remote::Open, ""));
        assert!(Record::from_message("7 ajar 0 ").is_err());
        assert!(Record::from_message("x open 0 ").is_err());
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(next_token(), next_token());
    }
}
