//! Test support shared by the test binaries through `#[path = "../support.rs"]`.
//!
//! [`RedisServer`] starts a private `redis-server` on a free loopback port with
//! no persistence, so a test may kill it, restart it or flush it without
//! touching anyone else's Redis:
//! `let Some(redis) = RedisServer::start_or_skip("test name") else { return };`. Where `redis-server` is not installed, tests
//! that ask for one print a loud skip, unless `PALISADE_REQUIRE_REDIS=1`, which
//! turns the skip into a failure (CI sets it).
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
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
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
            })
            .collect();
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
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let index = self
            .nodes
            .iter()
            .position(|n| owns_slot(&n.cli(&["CLUSTER", "NODES"]), slot))
            .expect("some node serves every slot");
        &mut self.nodes[index]
    }
}

// Whether the `myself` line of a `CLUSTER NODES` answer lists `slot`.
fn owns_slot(nodes: &str, slot: u16) -> bool {
    let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
        return false;
    };
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.split('-').map(|e| e.parse::<u16>());
        match (ends.next(), ends.next()) {
            (Some(Ok(lo)), Some(Ok(hi))) => (lo..=hi).contains(&slot),
            (Some(Ok(one)), None) => one == slot,
            _ => false,
        }
    })
}

/// A writer for a `tracing_subscriber::fmt` subscriber that keeps every line
/// it is given, for a test to read back with [`CapturedLogs::text`]. Clones
/// share one buffer.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log lines are UTF-8")
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
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
