//! Rate limit decisions: palisade's GCRA against governor in memory, and
//! against the seed's fixed window and `redis-benchmark` in Redis.
//!
//! One run prints, each measured in the same process:
//! 1. In memory: criterion for governor direct / keyed (1,000 keys) and
//!    palisade's `MemoryStore` on the same key shapes, then interleaved
//!    rounds and the ratio palisade / governor (target <= 1.2), for the
//!    default store (`MemoryStore::new`: with feature `fast-clock`, which
//!    this package turns on, and tokio built without `test-util`, as here,
//!    it reads the TSC) and one with `fast_clock(false)` (what the default reads
//!    where tokio's time can be paused, or without `fast-clock`), and what
//!    each clock read costs. Then the whole layer: a bare
//!    always-ready service against the same service behind
//!    `RateLimitLayer` (global key, a quota that never denies), per call;
//!    with feature `metrics` the layer also records its counters (no
//!    recorder installed: the cost of the facade alone).
//! 2. Redis (a private `redis-server` on a free port, never 6379): decisions
//!    per second and p50/p99 at 1, 16 and 64 concurrent callers on one
//!    multiplexed connection for (a) INCR then EXPIRE, (b) INCR+EXPIRE
//!    pipelined, palisade's `RedisStore` as it comes (one quota: its lean
//!    script, batching concurrent decisions under load) and with batching
//!    off (every decision its own EVALSHA), and (c) `redis-benchmark`
//!    running the lean script by EVALSHA with as many connections; then the
//!    ratios for the default store (targets: p50 at 1 caller <= 0.6x (a);
//!    throughput at 64 >= 0.9x (b) and >= 1.0x (c)). Each row also shows
//!    Redis's own time per decision (`INFO commandstats` usec_per_call:
//!    INCR plus EXPIRE, or the EVALSHA with the script inside), which the
//!    client's share of the two cores does not blur.
//!    Then (b) and the default store in 7 interleaved rounds of 1 s at 64,
//!    16 and 1 callers, once on a `ConnectionManager` with redis-rs's
//!    defaults (Nagle's algorithm on) and once on
//!    `palisade::redis_conn::connect` (`TCP_NODELAY`, what
//!    `RedisStore::connect` uses), both variants on the same connection:
//!    per round the throughput and p50 ratios, the CPU time per decision
//!    of this process and of Redis, and decisions per script call; then
//!    the medians. (`RATE_LIMIT_BENCH=redis-rounds` runs only these.)
//! 3. A flood: one key sent 10x its burst by 64 callers, with and without
//!    the local deny cache: decisions/s and EVALSHA calls (from `INFO
//!    commandstats`) per decision and per denied request, target >= 5x.
//!
//! `cargo bench -p palisade-benches --no-default-features --features rate-limit --bench rate_limit`
//! (`-- --quick` shortens the criterion part; `RATE_LIMIT_BENCH=memory` runs
//! only the in-memory part, `RATE_LIMIT_BENCH=redis` only the Redis part.)

use std::hint::black_box;
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use governor::{Quota as GQuota, RateLimiter};
use palisade::rate_limit::{Limits, MemoryStore, Quota, RateLimitLayer, RedisStore, Store};
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use redis::aio::ConnectionManager;
use tower::{Layer, Service, ServiceExt, service_fn};

const KEYS: usize = 1_000;

fn memory(c: &mut Criterion) {
    let big = NonZeroU32::new(u32::MAX).unwrap();
    let gov_direct = RateLimiter::direct(GQuota::per_second(big));
    let gov_keyed = RateLimiter::<String, _, _>::keyed(GQuota::per_second(big));
    // The default store reads the TSC through quanta, as governor does
    // (tokio's time cannot be paused in this build); the other one reads
    // tokio's clock, as the default does where time can be paused.
    let store = MemoryStore::new();
    let tokio_clock = MemoryStore::new().fast_clock(false);
    println!("default store: {store:?}");
    let limits = Limits::new([Quota::per_second(big)]);
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    // Each store's first single-quota key takes its lock-free slot (what a
    // layer with the global key gets); the 1,000 keys go through the shards.
    store.check_now("k", &limits, 1);
    tokio_clock.check_now("k", &limits, 1);

    let mut g = c.benchmark_group("memory");
    g.bench_function("governor direct", |b| {
        b.iter(|| black_box(gov_direct.check().is_ok()))
    });
    g.bench_function("palisade direct", |b| {
        b.iter(|| black_box(store.check_now("k", &limits, 1).is_allowed()))
    });
    g.bench_function("palisade direct, tokio clock", |b| {
        b.iter(|| black_box(tokio_clock.check_now("k", &limits, 1).is_allowed()))
    });
    let mut i = 0;
    g.bench_function("governor keyed 1000", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(gov_keyed.check_key(&keys[i]).is_ok())
        })
    });
    g.bench_function("palisade keyed 1000", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(store.check_now(&keys[i], &limits, 1).is_allowed())
        })
    });
    g.bench_function("palisade keyed 1000, tokio clock", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(tokio_clock.check_now(&keys[i], &limits, 1).is_allowed())
        })
    });
    g.finish();

    // Interleaved rounds: the ratio from one run, robust to drift.
    let per_op = |f: &mut dyn FnMut()| {
        const N: u32 = 200_000;
        let t = Instant::now();
        for _ in 0..N {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let quanta = governor::clock::QuantaClock::default();
    let mut rounds: [Vec<f64>; 8] = Default::default();
    for _ in 0..15 {
        rounds[0].push(per_op(&mut || {
            black_box(gov_direct.check().is_ok());
        }));
        rounds[1].push(per_op(&mut || {
            black_box(store.check_now("k", &limits, 1).is_allowed());
        }));
        rounds[2].push(per_op(&mut || {
            black_box(tokio_clock.check_now("k", &limits, 1).is_allowed());
        }));
        rounds[3].push(per_op(&mut || {
            i = (i + 1) % KEYS;
            black_box(gov_keyed.check_key(&keys[i]).is_ok());
        }));
        rounds[4].push(per_op(&mut || {
            i = (i + 1) % KEYS;
            black_box(store.check_now(&keys[i], &limits, 1).is_allowed());
        }));
        rounds[5].push(per_op(&mut || {
            i = (i + 1) % KEYS;
            black_box(tokio_clock.check_now(&keys[i], &limits, 1).is_allowed());
        }));
        rounds[6].push(per_op(&mut || {
            black_box(tokio::time::Instant::now());
        }));
        rounds[7].push(per_op(&mut || {
            black_box(governor::clock::Clock::now(&quanta));
        }));
    }
    let m: Vec<f64> = rounds.iter_mut().map(|r| median(r)).collect();
    println!("\n== in memory, median of 15 interleaved rounds (ns per decision) ==");
    println!(
        "direct:     governor {:6.1}  palisade {:6.1} ({:.2}x)  with tokio's clock {:6.1} ({:.2}x)  (target <= 1.2)",
        m[0],
        m[1],
        m[1] / m[0],
        m[2],
        m[2] / m[0]
    );
    println!(
        "keyed 1000: governor {:6.1}  palisade {:6.1} ({:.2}x)  with tokio's clock {:6.1} ({:.2}x)  (target <= 1.2)",
        m[3],
        m[4],
        m[4] / m[3],
        m[5],
        m[5] / m[3]
    );
    println!(
        "clock read: tokio::time::Instant::now {:5.1}  governor's quanta clock {:5.1}",
        m[6], m[7]
    );
    // Where time can be paused the store must read tokio's clock: that read
    // alone bounds its ratios from below.
    println!(
        "tokio's clock read alone: {:.2}x governor direct, {:.2}x governor keyed",
        m[6] / m[0],
        m[6] / m[3]
    );
}

/// The layer's added cost per call over the bare service it wraps.
fn layer(c: &mut Criterion) {
    fn calls<S>(svc: S) -> Run
    where
        S: Service<u32, Response = u32, Error: std::fmt::Debug> + Clone + 'static,
    {
        run(move |iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    let ready = svc.ready().await.unwrap();
                    black_box(ready.call(i as u32).await.unwrap());
                }
                start.elapsed()
            }
        })
    }
    let bare = service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
    let limited = RateLimitLayer::new(Quota::per_second(NonZeroU32::MAX)).layer(bare);
    let variants = [
        ("bare service", calls(bare)),
        ("rate limit layer", calls(limited)),
    ];
    bench_group(c, "layer", &variants);
    let m = interleaved_medians(&variants, 15, 200_000);
    println!(
        "\n== the layer in memory, median of 15 interleaved rounds (ns per call; metrics {}) ==",
        if cfg!(feature = "metrics") {
            "on, no recorder"
        } else {
            "off"
        }
    );
    println!(
        "bare {:6.1}  with RateLimitLayer {:6.1}  added {:6.1}",
        m[0],
        m[1],
        m[1] - m[0]
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_ne!(port, 6379);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self { child, port };
        for _ in 0..500 {
            if server.cli(&["PING"]) == "PONG" {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn evalsha_calls(&self) -> u64 {
        self.command_stats("evalsha").0
    }

    /// `(calls, usec)` of `command` in `INFO commandstats` since the last
    /// `CONFIG RESETSTAT`.
    fn command_stats(&self, command: &str) -> (u64, u64) {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:");
        let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
            return (0, 0);
        };
        let field = |name: &str| {
            line.split(',')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (field("calls"), field("usec"))
    }

    /// Redis's own time (µs) per decision since the last reset: the
    /// commands' usec over `decisions` (a script's commands run inside its
    /// EVALSHA and are counted there).
    fn usec_per_decision(&self, commands: &[&str], decisions: u64) -> f64 {
        let usec: u64 = commands.iter().map(|c| self.command_stats(c).1).sum();
        usec as f64 / decisions.max(1) as f64
    }

    /// CPU time so far: this process, its waited-for children (the
    /// `redis-benchmark` runs), and the server.
    fn cpu(&self) -> Cpu {
        let (own, children) = cpu_ticks("self");
        Cpu {
            own,
            children,
            redis: cpu_ticks(&self.child.id().to_string()).0,
        }
    }

    fn reset_stats(&self) {
        assert_eq!(self.cli(&["CONFIG", "RESETSTAT"]), "OK");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU ticks (1/100 s, Linux's `USER_HZ`) from `/proc`.
#[derive(Clone, Copy)]
struct Cpu {
    own: u64,
    children: u64,
    redis: u64,
}

/// `(utime + stime, cutime + cstime)` of `/proc/<pid>/stat`, in ticks.
fn cpu_ticks(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime is the
    // 14th field of the line, so the 12th after ')'.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    (at(11) + at(12), at(13) + at(14))
}

#[derive(Clone, Copy)]
struct Stats {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    ops: u64,
    server_us: f64,
    client_cpu_us: f64,
    redis_cpu_us: f64,
}

/// Runs `op` from `callers` tasks for `secs`, each op timed.
async fn drive<F, Fut>(callers: usize, run: Duration, op: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut n = c as u64 * 1_000_000;
                while start.elapsed() < run {
                    let t = Instant::now();
                    op(n).await;
                    lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    Stats {
        per_sec: all.len() as f64 / elapsed,
        p50_us: all[all.len() / 2],
        p99_us: all[all.len() * 99 / 100],
        ops: all.len() as u64,
        server_us: f64::NAN,
        client_cpu_us: f64::NAN,
        redis_cpu_us: f64::NAN,
    }
}

fn redis_benchmark(server: &Server, callers: usize, sha: &str) -> Stats {
    let n = if callers == 1 { 10_000 } else { 50_000 };
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &server.port.to_string(),
            "-c",
            &callers.to_string(),
            "-n",
            &n.to_string(),
        ])
        .args([
            "-r",
            "10000",
            "--csv",
            "EVALSHA",
            sha,
            "1",
            "palisade:rl:{rb:__rand_int__}:default:1:1000000000",
        ])
        // What the store sends for that quota (cost 1): cost * interval,
        // tolerance minus that, the TTL (ms) of a fresh key.
        .args(["1", "999999999", "1"])
        .output()
        .expect("redis-benchmark on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Stats {
        per_sec: row.first().copied().unwrap_or(f64::NAN),
        p50_us: row.get(3).copied().unwrap_or(f64::NAN) * 1000.0,
        p99_us: row.get(5).copied().unwrap_or(f64::NAN) * 1000.0,
        ops: n as u64,
        server_us: f64::NAN,
        client_cpu_us: f64::NAN,
        redis_cpu_us: f64::NAN,
    }
}

/// The INCR+EXPIRE pipeline of (b), one decision.
async fn incr_expire(mut c: ConnectionManager, n: u64) {
    let key = format!("seed:{}", n % 10_000);
    let _: (i64, i64) = redis::pipe()
        .incr(&key, 1)
        .expire(&key, 60)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// One palisade decision that Redis allows, on one of 10,000 keys.
async fn palisade_decision(s: RedisStore, l: Limits, n: u64) {
    let d = s.check(&format!("k{}", n % 10_000), &l, 1).await.unwrap();
    assert!(d.is_allowed());
}

/// `stats` with the CPU time (µs per decision) this process and Redis spent
/// since `before`.
fn with_cpu(server: &Server, before: Cpu, stats: Stats) -> Stats {
    let after = server.cpu();
    let per = |ticks: u64| ticks as f64 * 10_000.0 / stats.ops.max(1) as f64;
    Stats {
        client_cpu_us: per(after.own - before.own),
        redis_cpu_us: per(after.redis - before.redis),
        ..stats
    }
}

/// (b) and palisade's default store in interleaved rounds, each variant
/// once per round, at 64 callers and at 1, on each connection setup: drift
/// in the machine's load hits both alike, and the ratios are taken per
/// round, then their median.
async fn redis_rounds(server: &Server, url: &str, open: &Limits) {
    const ROUNDS: usize = 7;
    let run = Duration::from_millis(1000);
    let setups = [
        (
            "one ConnectionManager, redis-rs defaults",
            ConnectionManager::new(redis::Client::open(url).unwrap())
                .await
                .unwrap(),
        ),
        (
            "palisade::redis_conn::connect (TCP_NODELAY)",
            palisade::redis_conn::connect(url).await.unwrap(),
        ),
    ];
    for (setup, conn) in setups {
        let store = RedisStore::new(conn.clone())
            .deny_cache(false)
            .timeout(Duration::from_secs(5));
        println!("\n== {ROUNDS} interleaved rounds of {run:?}, both on {setup} ==");
        println!(
            "{:>7} {:>12} {:>12} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>6}",
            "callers",
            "(b) per s",
            "palisade/s",
            "ratio",
            "(b) p50 us",
            "pal p50 us",
            "ratio",
            "(b) cpu us",
            "pal cpu us",
            "per call"
        );
        for callers in [64usize, 16, 1] {
            let mut rows = Vec::new();
            for _ in 0..ROUNDS {
                let c = conn.clone();
                let cpu = server.cpu();
                let b = drive(callers, run, move |n| incr_expire(c.clone(), n)).await;
                let b = with_cpu(server, cpu, b);
                let (s, l) = (store.clone(), open.clone());
                let cpu = server.cpu();
                let calls = server.command_stats("evalsha").0;
                let p = drive(callers, run, move |n| {
                    palisade_decision(s.clone(), l.clone(), n)
                })
                .await;
                let p = with_cpu(server, cpu, p);
                let per_call =
                    p.ops as f64 / (server.command_stats("evalsha").0 - calls).max(1) as f64;
                println!(
                    "{callers:>7} {:>12.0} {:>12.0} {:>7.2} {:>11.1} {:>11.1} {:>7.2} {:>5.1}+{:<5.1} {:>5.1}+{:<5.1} {per_call:>6.1}",
                    b.per_sec,
                    p.per_sec,
                    p.per_sec / b.per_sec,
                    b.p50_us,
                    p.p50_us,
                    p.p50_us / b.p50_us,
                    b.client_cpu_us,
                    b.redis_cpu_us,
                    p.client_cpu_us,
                    p.redis_cpu_us,
                );
                rows.push((b, p));
            }
            let med = |f: &dyn Fn(&(Stats, Stats)) -> f64| {
                let mut v: Vec<f64> = rows.iter().map(f).collect();
                median(&mut v)
            };
            let (min_r, max_r) = rows
                .iter()
                .map(|(b, p)| p.per_sec / b.per_sec)
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)));
            println!(
                "{callers:>7} median CPU us per decision, client + Redis: (b) {:.2} + {:.2}, palisade {:.2} + {:.2}",
                med(&|(b, _)| b.client_cpu_us),
                med(&|(b, _)| b.redis_cpu_us),
                med(&|(_, p)| p.client_cpu_us),
                med(&|(_, p)| p.redis_cpu_us),
            );
            println!(
                "{callers:>7} median: (b) {:.0}/s, palisade {:.0}/s, ratio {:.2} (per round {min_r:.2}..{max_r:.2}); p50 (b) {:.1} us, palisade {:.1} us, ratio {:.2}",
                med(&|(b, _)| b.per_sec),
                med(&|(_, p)| p.per_sec),
                med(&|(b, p)| p.per_sec / b.per_sec),
                med(&|(b, _)| b.p50_us),
                med(&|(_, p)| p.p50_us),
                med(&|(b, p)| p.p50_us / b.p50_us),
            );
        }
    }
    server.reset_stats();
}

async fn redis_benches(only_rounds: bool) {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("\n*** redis-server not on PATH: Redis benches skipped ***");
        return;
    }
    let server = Server::start();
    let url = format!("redis://127.0.0.1:{}/", server.port);
    if only_rounds {
        let open = Limits::new([Quota::with_interval(Duration::from_micros(1))
            .unwrap()
            .burst(NonZeroU32::new(1_000_000_000).unwrap())]);
        redis_rounds(&server, &url, &open).await;
        return;
    }
    let conn = ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())
        .await
        .unwrap();
    let store = RedisStore::new(conn.clone())
        .deny_cache(false)
        .timeout(Duration::from_secs(5));
    let unbatched = store.clone().batching(false);
    // Never denies: every decision runs the full write path.
    let open = Limits::new([Quota::with_interval(Duration::from_micros(1))
        .expect("a non-zero interval")
        .burst(NonZeroU32::new(1_000_000_000).unwrap())]);
    let script = redis::Script::new(include_str!("../src/rate_limit/store/redis/gcra.lua"));
    let sha = script.get_hash().to_owned();
    script
        .prepare_invoke()
        .load_async(&mut conn.clone())
        .await
        .unwrap();
    let run = Duration::from_millis(1500);

    println!(
        "\n== Redis, one multiplexed connection (redis-benchmark: one connection per caller) =="
    );
    println!(
        "{:>7} {:<28} {:>11} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "callers",
        "variant",
        "decisions/s",
        "p50 us",
        "p99 us",
        "cmd us",
        "redis cpu",
        "client cpu"
    );
    // Adds what one decision cost: Redis's time in its commands
    // (commandstats), and the CPU time of Redis and of the client (this
    // process, or the child `redis-benchmark`), each in µs per decision.
    let measured = |commands: &'static [&'static str], before: Cpu, stats: Stats| {
        let after = server.cpu();
        let per = |ticks: u64| ticks as f64 * 10_000.0 / stats.ops.max(1) as f64;
        let client = if commands == ["evalsha"] {
            after.children - before.children
        } else {
            after.own - before.own
        };
        Stats {
            server_us: server.usec_per_decision(commands, stats.ops),
            client_cpu_us: per(client),
            redis_cpu_us: per(after.redis - before.redis),
            ..stats
        }
    };
    let mut table = Vec::new();
    for callers in [1usize, 16, 64] {
        let c = conn.clone();
        server.reset_stats();
        let cpu = server.cpu();
        let a = drive(callers, run, move |n| {
            let mut c = c.clone();
            async move {
                let key = format!("seed:{}", n % 10_000);
                let _: i64 = redis::cmd("INCR")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let _: i64 = redis::cmd("EXPIRE")
                    .arg(&key)
                    .arg(60)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        })
        .await;
        let a = measured(&["incr", "expire"], cpu, a);
        let c = conn.clone();
        server.reset_stats();
        let cpu = server.cpu();
        let b = drive(callers, run, move |n| {
            let mut c = c.clone();
            async move {
                let key = format!("seed:{}", n % 10_000);
                let _: (i64, i64) = redis::pipe()
                    .incr(&key, 1)
                    .expire(&key, 60)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        })
        .await;
        let b = measured(&["incr", "expire"], cpu, b);
        // The store as it comes (batching), then each decision alone.
        let mut palisade = Vec::new();
        for s in [&store, &unbatched] {
            let (s, l) = (s.clone(), open.clone());
            server.reset_stats();
            let cpu = server.cpu();
            let st = drive(callers, run, move |n| {
                let (s, l) = (s.clone(), l.clone());
                async move {
                    let d = s.check(&format!("k{}", n % 10_000), &l, 1).await.unwrap();
                    assert!(d.is_allowed());
                }
            })
            .await;
            palisade.push(measured(&["evalsha", "eval"], cpu, st));
        }
        let (ours, alone) = (palisade[0], palisade[1]);
        server.reset_stats();
        let cpu = server.cpu();
        let bench = measured(&["evalsha"], cpu, redis_benchmark(&server, callers, &sha));
        for (name, st) in [
            ("(a) INCR then EXPIRE", a),
            ("(b) INCR+EXPIRE pipelined", b),
            ("palisade GCRA (default)", ours),
            ("palisade, batching off", alone),
            ("(c) redis-benchmark EVALSHA", bench),
        ] {
            println!(
                "{callers:>7} {name:<28} {:>11.0} {:>9.1} {:>9.1} {:>10.2} {:>10.1} {:>10.1}",
                st.per_sec, st.p50_us, st.p99_us, st.server_us, st.redis_cpu_us, st.client_cpu_us
            );
        }
        table.push((callers, a, b, ours, alone, bench));
    }
    let (_, a1, _, o1, u1, _) = table[0];
    let (_, _, b64, o64, u64_, c64) = table[2];
    println!(
        "ratios: p50 at 1 caller palisade/(a) = {:.2} (target <= 0.6)",
        o1.p50_us / a1.p50_us
    );
    println!(
        "        throughput at 64 palisade/(b) = {:.2} (target >= 0.9)",
        o64.per_sec / b64.per_sec
    );
    println!(
        "        throughput at 64 palisade/(c) = {:.2} (target >= 1.0)",
        o64.per_sec / c64.per_sec
    );
    println!(
        "        Redis's time per decision at 64 palisade/(b) = {:.2}, palisade/(c) = {:.2}",
        o64.server_us / b64.server_us,
        o64.server_us / c64.server_us
    );
    println!(
        "        batching off: p50 at 1 /(a) = {:.2}, throughput at 64 /(b) = {:.2}, /(c) = {:.2}",
        u1.p50_us / a1.p50_us,
        u64_.per_sec / b64.per_sec,
        u64_.per_sec / c64.per_sec
    );
    redis_rounds(&server, &url, &open).await;

    println!("\n== flood: one key, 64 callers, 10x its burst ==");
    let burst = NonZeroU32::new(1_000).unwrap();
    let total = 10 * burst.get() as usize;
    let mut rates = Vec::new();
    for (label, cache) in [("without deny cache", false), ("with deny cache", true)] {
        let s = RedisStore::new(conn.clone())
            .deny_cache(cache)
            .timeout(Duration::from_secs(5));
        let limits = Limits::new([Quota::per_minute(burst)]).namespaced(label);
        let before = server.evalsha_calls();
        let start = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|c| {
                let (s, l) = (s.clone(), limits.clone());
                tokio::spawn(async move {
                    let mut allowed = 0usize;
                    for _ in (c..total).step_by(64) {
                        allowed += usize::from(s.check("flood", &l, 1).await.unwrap().is_allowed());
                    }
                    allowed
                })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            allowed += t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let calls = server.evalsha_calls() - before;
        let denied = total - allowed;
        let rate = total as f64 / elapsed;
        println!(
            "{label:<19} {rate:>10.0} decisions/s  allowed {allowed}  denied {denied}  EVALSHA {calls}: {:.3} per decision, {:.3} per denied request",
            calls as f64 / total as f64,
            calls as f64 / denied as f64
        );
        rates.push(rate);
    }
    println!(
        "ratio with/without deny cache = {:.1} (target >= 5)",
        rates[1] / rates[0]
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let only = std::env::var("RATE_LIMIT_BENCH").ok();
    if !only.as_deref().is_some_and(|o| o.starts_with("redis")) {
        memory(&mut c);
        layer(&mut c);
        c.final_summary();
    }
    if only.as_deref() == Some("memory") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(redis_benches(only.as_deref() == Some("redis-rounds")));
}
