//! Test support shared by the test binaries through `#[path = "../support/mod.rs"]`.
//!
//! [`RedisServer`] starts a private `redis-server` on a free loopback port with
//! no persistence, so a test may kill it, restart it or flush it without
//! touching anyone else's Redis:
//! `let Some(redis) = RedisServer::start_or_skip("test name") else { return };`. Where `redis-server` is not installed, tests
//! that ask for one print a loud skip, unless `PALISADE_REQUIRE_REDIS=1`, which
//! turns the skip into a failure (CI sets it).
//!
//! [`CapturedLogs`] records one test's tracing events:
//! `let logs = CapturedLogs::start();`, then `logs.text()`. Tests never set a
//! subscriber of their own (see its docs for why).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`, stopped by its pid on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server, or returns `None` after a loud skip message when
    /// `redis-server` is missing and `PALISADE_REQUIRE_REDIS` is not `1`.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        if which("redis-server") {
            return Some(Self::start());
        }
        if std::env::var("PALISADE_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("redis-server is not on PATH and PALISADE_REQUIRE_REDIS=1");
        }
        eprintln!(
            "\n*** SKIPPED {test}: redis-server is not on PATH (set PALISADE_REQUIRE_REDIS=1 to fail instead) ***\n"
        );
        None
    }

    /// Starts a server on a free port; panics if it does not come up.
    pub fn start() -> Self {
        let mut server = Self::new_stopped();
        server.spawn();
        server
    }

    fn new_stopped() -> Self {
        Self::new_stopped_on(free_port())
    }

    fn new_stopped_on(port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("palisade-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        Self {
            child: None,
            port,
            dir,
            extra_args: Vec::new(),
        }
    }

    /// Starts a replica of `primary` (`--replicaof`) and waits, up to 10 s,
    /// until it acknowledges a write: a replica the primary already calls
    /// `online` may not answer a `WAIT` for a few hundred milliseconds more.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        // Redis waits 5 s for more replicas before a diskless first sync.
        primary.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
        let mut replica = Self::new_stopped();
        let port = primary.port.to_string();
        replica.extra_args = vec!["--replicaof".into(), "127.0.0.1".into(), port];
        replica.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if primary.write_acked_by_a_replica() {
                return replica;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("replica on port {} did not sync in 10 s", replica.port);
    }

    /// Writes (and deletes) a key and asks `WAIT 1 100` on the same
    /// connection whether a replica acknowledged it.
    fn write_acked_by_a_replica(&self) -> bool {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run redis-cli");
        let commands = b"SET palisade:replica-check 1\nDEL palisade:replica-check\nWAIT 1 100\n";
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(commands)
            .expect("write to redis-cli");
        let out = child.wait_with_output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).lines().last() == Some("1")
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis://` URL for clients.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGSTOP): it keeps its port, and the kernel
    /// accepts connections that nothing answers, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command with `redis-cli` and returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Client connections Redis accepted since it started (`INFO stats`
    /// `total_connections_received`), this query's own included.
    pub fn connections_received(&self) -> u64 {
        self.cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .expect("INFO stats has total_connections_received")
            .trim()
            .parse()
            .expect("total_connections_received is a number")
    }

    /// How many times Redis ran `commands` (lowercase, as `INFO
    /// commandstats` names them: `evalsha`, `eval`), together, since it
    /// started or since `CONFIG RESETSTAT`.
    pub fn command_calls(&self, commands: &[&str]) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                commands.contains(&name).then_some(rest)
            })
            .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Starts a cluster-enabled server that owns every slot alone, or
    /// returns `None` after a loud skip message (as [`start_or_skip`](Self::start_or_skip);
    /// it needs `redis-cli` too). It answers every key on one address, as a
    /// plain Redis would, but refuses a command or script whose keys are in
    /// two slots with `CROSSSLOT`, as Redis Cluster proxies and serverless
    /// endpoints do.
    pub fn start_slot_enforcing_or_skip(test: &str) -> Option<Self> {
        if !(which("redis-server") && which("redis-cli")) {
            if std::env::var("PALISADE_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("redis-server or redis-cli is not on PATH and PALISADE_REQUIRE_REDIS=1");
            }
            eprintln!(
                "\n*** SKIPPED {test}: redis-server/redis-cli not on PATH (set PALISADE_REQUIRE_REDIS=1 to fail instead) ***\n"
            );
            return None;
        }
        let mut node = Self::new_stopped_on(free_cluster_port());
        node.extra_args = vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            "nodes.conf".into(),
        ];
        node.spawn();
        assert_eq!(node.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]), "OK");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(
                Instant::now() < deadline,
                "one-node cluster did not reach cluster_state:ok in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(node)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer PING in 10 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A free port for a cluster node: the cluster bus listens 10000 above it,
/// so that one must be free too (and exist: Redis refuses ports over 55535).
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A private Redis Cluster of three masters (no replicas) on free loopback
/// ports, each node stopped by its pid on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts a cluster, or returns `None` after a loud skip message when
    /// `redis-server` is missing and `PALISADE_REQUIRE_REDIS` is not `1`.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        if which("redis-server") && which("redis-cli") {
            return Some(Self::start());
        }
        if std::env::var("PALISADE_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("redis-server or redis-cli is not on PATH and PALISADE_REQUIRE_REDIS=1");
        }
        eprintln!(
            "\n*** SKIPPED {test}: redis-server/redis-cli not on PATH (set PALISADE_REQUIRE_REDIS=1 to fail instead) ***\n"
        );
        None
    }

    /// Starts three cluster-enabled nodes, joins them with `redis-cli
    /// --cluster create` and waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster
            .nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "cluster did not reach cluster_state:ok in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis://` URLs of every node, for a cluster client's seed list.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, to kill one or run `redis-cli` against it.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Lets every master keep serving its own slots while another master is
    /// down (`cluster-require-full-coverage no`): with the default, every
    /// node refuses every key once a master without replicas is marked
    /// failed. Nodes that are down are skipped; a restarted node needs it
    /// again.
    pub fn serve_without_full_coverage(&mut self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            assert_eq!(
                node.cli(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]),
                "OK"
            );
        }
    }

    /// How many keys each node holds (`DBSIZE`), in node order.
    pub fn key_counts(&mut self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.cli(&["DBSIZE"]).parse().expect("DBSIZE answers a number"))
            .collect()
    }

    /// The node that serves `key`'s hash slot.
    pub fn node_for_key(&mut self, key: &str) -> &mut RedisServer {
        let index = self.slot_owner(self.key_slot(key));
        &mut self.nodes[index]
    }

    /// `key`'s hash slot (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The index of the node that serves `slot`, by its own account.
    pub fn slot_owner(&self, slot: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| owns_slot(&n.cli(&["CLUSTER", "NODES"]), slot))
            .expect("some node serves every slot")
    }

    /// Starts one more node, with no slot, joins it with `CLUSTER MEET` and
    /// waits until every node knows every other and reports
    /// `cluster_state:ok`; returns its index. Clients
    /// that read the slot map before see no sign of it until it serves a
    /// slot.
    pub fn add_master(&mut self) -> usize {
        let node = cluster_node();
        let port = node.port.to_string();
        assert_eq!(
            self.nodes[0].cli(&["CLUSTER", "MEET", "127.0.0.1", &port]),
            "OK"
        );
        self.nodes.push(node);
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        // The new node refuses keys (CLUSTERDOWN) until it has learned
        // every slot's owner.
        self.wait_until("every node knows the new one and every slot", |c| {
            c.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains(&known) && info.contains("cluster_state:ok")
            })
        });
        self.nodes.len() - 1
    }

    /// `CLUSTER MYID` of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index].cli(&["CLUSTER", "MYID"])
    }

    /// Starts moving an empty `slot` from node `from` to node `to`
    /// (`IMPORTING` on `to`, then `MIGRATING` on `from`): `from` keeps
    /// serving it, and answers `ASK` for keys it does not hold.
    pub fn start_slot_migration(&mut self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let set = |node: &RedisServer, state: &str, id: &str| {
            assert_eq!(node.cli(&["CLUSTER", "SETSLOT", &slot, state, id]), "OK");
        };
        set(&self.nodes[to], "IMPORTING", &from_id);
        set(&self.nodes[from], "MIGRATING", &to_id);
    }

    /// Gives `slot` (whose keys, if any, have moved) to node `to`:
    /// `SETSLOT NODE` on `to` first, then on every other node, and waits
    /// until every node says `to` serves it. Clients that read the slot map
    /// before get `MOVED` for it.
    pub fn finish_slot_migration(&mut self, slot: u16, to: usize) {
        let (text, to_id) = (slot.to_string(), self.node_id(to));
        let order = std::iter::once(to).chain((0..self.nodes.len()).filter(|&i| i != to));
        for i in order {
            let out = self.nodes[i].cli(&["CLUSTER", "SETSLOT", &text, "NODE", &to_id]);
            assert_eq!(out, "OK", "SETSLOT NODE on node {i}");
        }
        let port = format!(":{}@", self.nodes[to].port);
        self.wait_until("every node sees the slot's new owner", |c| {
            c.nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .filter(|l| l.contains(&port))
                    .any(|l| owns_slot_line(l, slot))
            })
        });
    }

    /// Polls `done` every 50 ms for up to 20 s; panics with `what` after.
    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A stopped-then-spawned cluster-enabled node on a free port (its bus port
/// free too).
fn cluster_node() -> RedisServer {
    let mut node = RedisServer::new_stopped_on(free_cluster_port());
    node.extra_args = vec![
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        "nodes.conf".into(),
        "--cluster-node-timeout".into(),
        "2000".into(),
    ];
    node.spawn();
    node
}

// Whether the `myself` line of a `CLUSTER NODES` answer lists `slot`.
fn owns_slot(nodes: &str, slot: u16) -> bool {
    nodes
        .lines()
        .find(|l| l.contains("myself"))
        .is_some_and(|line| owns_slot_line(line, slot))
}

// Whether one `CLUSTER NODES` line lists `slot` (not as migrating or
// importing, which are in brackets).
fn owns_slot_line(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.split('-').map(|e| e.parse::<u16>());
        match (ends.next(), ends.next()) {
            (Some(Ok(lo)), Some(Ok(hi))) => (lo..=hi).contains(&slot),
            (Some(Ok(one)), None) => one == slot,
            _ => false,
        }
    })
}

/// The tracing events of one test, as lines that read like those of a
/// `tracing_subscriber::fmt` subscriber without the time, fields formatted as
/// it formats them: `DEBUG request{id=7}: palisade::x: message key="value" n=1`.
///
/// Each test binary has one global subscriber, installed by the first
/// capture. A test's own subscriber (`set_default`, `with_default`) would
/// serve only its thread, while tracing caches for the whole process whether
/// any subscriber wants a callsite: a callsite first reached on another
/// test's thread, where none does, stays off everywhere, and the test misses
/// its events. The global one answers "sometimes" for every callsite, so
/// nothing is cached off, and decides per event.
///
/// [`start`](Self::start) enters the capture's span on the calling thread
/// until the capture drops; the events recorded are those emitted inside that
/// span: the test's own and those of every task a current-thread runtime
/// (`#[tokio::test]`'s default) polls on that thread. Work on other threads
/// (a multi-thread runtime's workers, `std::thread::spawn`) is recorded once
/// instrumented with [`span`](Self::span). Tests running in parallel each
/// have their own span and see only their own events.
#[derive(Debug)]
pub struct CapturedLogs {
    lines: Lines,
    span: tracing::Span,
    _entered: tracing::span::EnteredSpan,
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Live captures in this process: with none, the subscriber turns every event
/// and span down, so tests that capture nothing pay (almost) nothing.
static CAPTURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CapturedLogs {
    /// Starts capturing the events emitted on this thread, and inside
    /// [`span`](Self::span) anywhere, until the capture drops.
    ///
    /// # Panics
    ///
    /// If something else set a global subscriber, or this thread has a
    /// subscriber of its own: both would keep events from the capture.
    pub fn start() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder))
                .expect("no other global subscriber: tests capture with CapturedLogs");
        });
        // A callsite first reached on another thread while the subscriber was
        // being installed may still be cached as off: ask them all again.
        tracing::callsite::rebuild_interest_cache();
        // Counted before the span is made, or the span would be turned down.
        CAPTURES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lines = Lines::default();
        let span = tracing::info_span!("captured_logs");
        span.with_subscriber(|(id, dispatch)| {
            use tracing_subscriber::registry::LookupSpan;
            let registry = dispatch
                .downcast_ref::<tracing_subscriber::Registry>()
                .expect("the global subscriber, not one of this thread's own");
            registry
                .span(id)
                .expect("the span was just made")
                .extensions_mut()
                .insert(Sink(lines.clone()));
        })
        .expect("the capture's span is enabled");
        let entered = span.clone().entered();
        Self {
            lines,
            span,
            _entered: entered,
        }
    }

    /// The capture's span: `.instrument(logs.span().clone())` a future that
    /// runs on another thread to record its events too.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Everything recorded so far, one event a line.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

impl Drop for CapturedLogs {
    fn drop(&mut self) {
        CAPTURES.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Where the events under a capture's span go: an extension of that span.
struct Sink(Lines);

/// A span's fields, formatted as `fmt` formats them.
struct SpanFields(String);

/// The global subscriber's one layer, over a `Registry` that keeps the spans.
struct Recorder;

impl<S> tracing_subscriber::Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Never `never` (cached for the process) nor `always` (which skips
        // `enabled`): whether an event is wanted changes as tests come and go.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        CAPTURES.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = String::new();
        format_fields(&mut fields, attrs);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            if !fields.is_empty() {
                fields.push(' ');
            }
            format_fields(fields, values);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        // Innermost first, up to the capture's span; an event under no
        // capture's span is not recorded.
        let mut spans = Vec::new();
        let mut sink = None;
        for span in scope {
            let extensions = span.extensions();
            if let Some(Sink(lines)) = extensions.get::<Sink>() {
                sink = Some(lines.clone());
                break;
            }
            match extensions.get::<SpanFields>() {
                Some(SpanFields(f)) if !f.is_empty() => {
                    spans.push(format!("{}{{{f}}}:", span.name()));
                }
                _ => spans.push(format!("{}:", span.name())),
            }
        }
        let Some(lines) = sink else { return };
        let meta = event.metadata();
        let mut line = format!("{:>5} ", meta.level());
        for span in spans.iter().rev() {
            line.push_str(span);
        }
        if !spans.is_empty() {
            line.push(' ');
        }
        line.push_str(meta.target());
        line.push_str(": ");
        format_fields(&mut line, event);
        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

/// Appends `fields` as `tracing_subscriber::fmt` writes them: the message
/// first, then `name=value` with strings quoted, separated by spaces.
fn format_fields(out: &mut String, fields: impl tracing_subscriber::field::RecordFields) {
    use tracing_subscriber::fmt::FormatFields;
    use tracing_subscriber::fmt::format::{DefaultFields, Writer};
    // Writing into a String cannot fail.
    let _ = DefaultFields::new().format_fields(Writer::new(out), fields);
}

/// The counters and gauges of a `DebuggingRecorder` snapshot whose name
/// starts with `prefix`, keyed as Prometheus prints them with the labels in
/// recording order: `palisade_timeout_calls_total{name="api",outcome="completed"}`.
pub fn metric_values(
    snapshotter: &metrics_util::debugging::Snapshotter,
    prefix: &str,
) -> std::collections::BTreeMap<String, f64> {
    samples(snapshotter, prefix, false)
}

/// Like [`metric_values`], with histograms too: a histogram's value is its
/// number of samples.
pub fn metric_samples(
    snapshotter: &metrics_util::debugging::Snapshotter,
    prefix: &str,
) -> std::collections::BTreeMap<String, f64> {
    samples(snapshotter, prefix, true)
}

fn samples(
    snapshotter: &metrics_util::debugging::Snapshotter,
    prefix: &str,
    histograms: bool,
) -> std::collections::BTreeMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name().starts_with(prefix))
        .filter_map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.0,
                DebugValue::Histogram(samples) if histograms => samples.len() as f64,
                DebugValue::Histogram(_) => return None,
            };
            Some((
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            ))
        })
        .collect()
}
