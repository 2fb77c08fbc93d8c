//! A TCP proxy of the test's own between a client and a server (Redis), to
//! inject network faults: latency each way, a cut (every connection closed,
//! new ones closed at once) or a stall (connections stay open, nothing
//! passes), and a restore. Apart from `support/mod.rs` because it needs tokio's
//! `net`, which the benches that share `support/mod.rs` build without.
//!
//! ```ignore
//! let proxy = FaultProxy::start(redis.port()).await;
//! proxy.set_latency(Duration::from_millis(15)); // a 30 ms round trip
//! let store = RedisStore::connect(&proxy.url()).await?;
//! proxy.cut();     // Redis gone
//! proxy.restore(); // back
//! ```
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Open connections are closed and new ones are closed on accept.
    Cut,
    /// Connections are accepted and kept, but no byte passes either way.
    Stall,
}

#[derive(Debug)]
struct State {
    /// Added to every chunk, each way, in microseconds.
    latency_us: AtomicU64,
    accepted: AtomicU64,
    /// Bumped by every change of mode, so open connections re-read it.
    mode: watch::Sender<Mode>,
}

/// A fault-injecting TCP proxy to `127.0.0.1:<upstream port>`; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let state = Arc::new(State {
            latency_us: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            mode: watch::channel(Mode::Pass).0,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if *shared.mode.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, upstream, shared.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<proxy address>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Delays every chunk by `each_way` in each direction (a round trip pays
    /// it twice); throughput is not limited.
    pub fn set_latency(&self, each_way: Duration) {
        let us = u64::try_from(each_way.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(us, Ordering::Relaxed);
    }

    /// Closes every open connection and every new one, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but lets nothing through (a partition without
    /// resets), until [`restore`](Self::restore).
    pub fn stall(&self) {
        self.state.mode.send_replace(Mode::Stall);
    }

    /// Lets traffic through again (connections cut stay closed).
    pub fn restore(&self) {
        self.state.mode.send_replace(Mode::Pass);
    }

    /// Connections accepted so far, refused ones during a cut included.
    pub fn connections(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.mode.send_replace(Mode::Cut);
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Each direction: a reader stamps chunks as they arrive, a writer sends
    // each one when its latency has passed, so latency adds up per chunk
    // without limiting throughput. A cut ends all four.
    let directions = [
        pipe(client_read, server_write, state.clone()),
        pipe(server_read, client_write, state.clone()),
    ];
    let mut mode = state.mode.subscribe();
    tokio::select! {
        _ = futures::future::join_all(directions) => {}
        _ = mode.wait_for(|m| *m == Mode::Cut) => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut mode = state.mode.subscribe();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now()
                        + Duration::from_micros(state.latency_us.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // A stall holds the bytes back until the mode changes.
            let _ = mode.wait_for(|m| *m != Mode::Stall).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
