//! A breaker shared across instances through Redis: three layers (three
//! instances) on one private `redis-server`, on real time (Redis is real).
//! Every wait polls with short sleeps against a generous bound; the measured
//! propagation times are printed (`--nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Config, Error, Handle, RedisFleet, State,
};
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::nz;
use super::support::{CapturedLogs, RedisServer};

/// How long any propagation may take here: generous for a loaded machine.
const BOUND: Duration = Duration::from_secs(2);
const NAME: &str = "payments";
const CHANNEL: &str = "palisade:circuit_breaker:{payments}";

type Backend = BoxCloneSyncService<Call, &'static str, &'static str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Ok,
    Fail,
    /// Succeeds once the test lets it (the gate), so probes stay in flight.
    Gated,
}

/// A downstream shared by the three instances: counts every call reaching it.
#[derive(Clone)]
struct Downstream {
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Downstream {
    fn new() -> Self {
        Self {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(&self) -> Backend {
        let this = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |call: Call| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let gate = this.gate.clone();
            async move {
                match call {
                    Call::Ok => Ok("ok"),
                    Call::Fail => Err("boom"),
                    Call::Gated => {
                        gate.acquire().await.expect("gate open").forget();
                        Ok("ok")
                    }
                }
            }
        }))
    }
}

struct Instance {
    svc: CircuitBreaker<Backend>,
    handle: Handle,
}

impl Instance {
    fn new(fleet: &RedisFleet, config: Config, downstream: &Downstream) -> Self {
        let layer = CircuitBreakerLayer::new(config.name(NAME)).shared(fleet.clone());
        let handle = layer.handle();
        Self {
            svc: layer.layer(downstream.service()),
            handle,
        }
    }

    async fn send(&mut self, call: Call) -> Result<&'static str, Error<&'static str>> {
        self.svc.ready().await?.call(call).await
    }

    fn state(&self) -> State {
        self.handle.state()
    }
}

async fn fleet(redis: &RedisServer, poll_interval: Duration) -> RedisFleet {
    RedisFleet::connect(&redis.url())
        .await
        .expect("connect to the test's redis-server")
        .poll_interval(poll_interval)
        .timeout(Duration::from_millis(200))
}

/// Polls `done` every millisecond until it holds; panics `bound` after
/// `started`. Returns how long it took since `started`.
async fn within(
    started: Instant,
    bound: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Duration {
    loop {
        if done() {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn subscribers(redis: &RedisServer) -> usize {
    let out = redis.cli(&["PUBSUB", "NUMSUB", CHANNEL]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the three instances have joined: subscribed, state read.
async fn joined(redis: &RedisServer) {
    subscribed(redis, 3).await;
}

/// Waits until `n` subscribers listen to the breaker's channel.
async fn subscribed(redis: &RedisServer, n: usize) {
    let started = Instant::now();
    while subscribers(redis) != n {
        assert!(
            started.elapsed() < 10 * BOUND,
            "the instances did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The read follows the subscription; give it its round trip.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn script_calls(redis: &RedisServer) -> u64 {
    redis.command_calls(&["evalsha", "eval"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_on_one_instance_opens_the_others_within_the_bound_with_no_round_trip_while_closed()
{
    let Some(redis) = RedisServer::start_or_skip("a_trip_on_one_instance_opens_the_others") else {
        return;
    };
    // Polling is off in effect: only pub/sub can carry the trip in time.
    let fleet = fleet(&redis, Duration::from_secs(600)).await;
    let downstream = Downstream::new();
    let config = Config::new()
        .consecutive_failures(nz(2))
        .open_wait(Duration::from_secs(60));
    let mut a = Instance::new(&fleet, config.clone(), &downstream);
    let mut b = Instance::new(&fleet, config.clone(), &downstream);
    let mut c = Instance::new(&fleet, config, &downstream);
    joined(&redis).await;

    // The closed path decides locally: no script runs for 300 calls.
    let before = script_calls(&redis);
    for instance in [&mut a, &mut b, &mut c] {
        for _ in 0..100 {
            assert_eq!(instance.send(Call::Ok).await.unwrap(), "ok");
        }
    }
    assert_eq!(script_calls(&redis), before, "a closed call went to Redis");

    let _ = a.send(Call::Fail).await;
    let tripped = Instant::now();
    let _ = a.send(Call::Fail).await;
    assert_eq!(a.state(), State::Open);
    let took = within(tripped, BOUND, "b and c open", || {
        b.state() == State::Open && c.state() == State::Open
    })
    .await;
    println!("shared breaker: trip propagated by pub/sub in {took:?}");

    let reached = downstream.calls();
    for instance in [&mut b, &mut c] {
        let err = instance.send(Call::Ok).await.unwrap_err();
        assert!(err.is_open(), "{err:?}");
    }
    assert_eq!(
        downstream.calls(),
        reached,
        "a refused call reached the downstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_n_probes_reach_the_downstream_fleet_wide_and_their_success_closes_every_instance() {
    let Some(redis) = RedisServer::start_or_skip("only_n_probes_reach_the_downstream") else {
        return;
    };
    let fleet = fleet(&redis, Duration::from_millis(500)).await;
    let downstream = Downstream::new();
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(Duration::from_millis(300))
        .half_open_probes(nz(2))
        .probe_timeout(Duration::from_secs(30));
    let mut instances: Vec<_> = (0..3)
        .map(|_| Instance::new(&fleet, config.clone(), &downstream))
        .collect();
    joined(&redis).await;

    let _ = instances[0].send(Call::Fail).await;
    within(Instant::now(), BOUND, "all open", || {
        instances.iter().all(|i| i.state() == State::Open)
    })
    .await;
    let tripped = downstream.calls();

    // All three get traffic through the end of the wait and well past it;
    // every probe hangs at the gate, so each permit stays taken.
    let drive = |svc: CircuitBreaker<Backend>| {
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0;
            while started.elapsed() < Duration::from_millis(1500) {
                let mut svc = svc.clone();
                let call = svc.ready().await.expect("always ready").call(Call::Gated);
                tokio::spawn(call);
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    let drivers: Vec<_> = instances.iter().map(|i| drive(i.svc.clone())).collect();
    for driver in drivers {
        assert!(driver.await.unwrap() > 10, "an instance got little traffic");
    }
    let probes = downstream.calls() - tripped;
    println!("shared breaker: {probes} probe(s) reached the downstream from three instances");
    assert_eq!(probes, 2, "the fleet ran {probes} probes, not 2");
    let half_open = instances
        .iter()
        .filter(|i| i.state() == State::HalfOpen)
        .count();
    assert_eq!(half_open, 1, "one instance probes for the fleet");

    // The probes succeed: the prober closes, and so do the others.
    let released = Instant::now();
    downstream.gate.add_permits(1_000);
    let took = within(released, BOUND, "all closed", || {
        instances.iter().all(|i| i.state() == State::Closed)
    })
    .await;
    println!("shared breaker: close propagated in {took:?}");
    let before = downstream.calls();
    for instance in &mut instances {
        assert_eq!(instance.send(Call::Ok).await.unwrap(), "ok");
    }
    assert_eq!(downstream.calls(), before + 3);
}

/// The instance that wins the probe lease may get no call to probe with:
/// it gives the lease back after a poll interval, long before the lease
/// (the probe timeout) would run out, and another instance probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_won_without_traffic_is_given_back_and_another_instance_probes() {
    let Some(redis) = RedisServer::start_or_skip("a_lease_won_without_traffic") else {
        return;
    };
    let poll_interval = Duration::from_millis(200);
    let fleet = fleet(&redis, poll_interval).await;
    let downstream = Downstream::new();
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(Duration::from_millis(200))
        .probe_timeout(Duration::from_secs(60));
    let mut a = Instance::new(&fleet, config.clone(), &downstream);
    let mut b = Instance::new(&fleet, config.clone(), &downstream);
    let c = Instance::new(&fleet, config, &downstream);
    joined(&redis).await;

    let _ = a.send(Call::Fail).await;
    within(Instant::now(), BOUND, "b and c open", || {
        b.state() == State::Open && c.state() == State::Open
    })
    .await;
    // a's one call after the wait asks for the lease (and is refused); a
    // gets no other call.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(a.send(Call::Ok).await.unwrap_err().is_open());
    within(Instant::now(), BOUND, "a holds the lease", || {
        a.state() == State::HalfOpen
    })
    .await;
    let reached = downstream.calls();
    // b keeps calling: refused while a holds the lease, then b probes.
    let started = Instant::now();
    loop {
        match b.send(Call::Ok).await {
            Ok(_) => break,
            Err(err) => assert!(err.is_open(), "{err:?}"),
        }
        assert!(started.elapsed() < 2 * BOUND, "b never probed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "shared breaker: an unused lease was given back and b probed after {:?}",
        started.elapsed()
    );
    assert_eq!(downstream.calls(), reached + 1, "one probe, b's");
    within(Instant::now(), BOUND, "all closed", || {
        [a.state(), b.state(), c.state()] == [State::Closed; 3]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_each_instance_decides_alone_and_rejoins_when_it_is_back() {
    let Some(mut redis) = RedisServer::start_or_skip("with_redis_killed_each_instance_decides")
    else {
        return;
    };
    let logs = CapturedLogs::start();
    let fleet = fleet(&redis, Duration::from_millis(100)).await;
    let downstream = Downstream::new();
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(Duration::from_millis(300));
    let mut a = Instance::new(&fleet, config.clone(), &downstream);
    let mut b = Instance::new(&fleet, config.clone(), &downstream);
    let mut c = Instance::new(&fleet, config, &downstream);
    joined(&redis).await;

    redis.kill();
    // A local trip stays local.
    let _ = b.send(Call::Fail).await;
    assert_eq!(b.state(), State::Open);
    assert!(b.send(Call::Ok).await.unwrap_err().is_open());
    for _ in 0..20 {
        assert_eq!(a.send(Call::Ok).await.unwrap(), "ok");
        assert_eq!(c.send(Call::Ok).await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((a.state(), c.state()), (State::Closed, State::Closed));
    // After its wait, b probes on its own and closes.
    let started = Instant::now();
    loop {
        match b.send(Call::Ok).await {
            Ok(_) => break,
            Err(err) => assert!(err.is_open(), "{err:?}"),
        }
        assert!(started.elapsed() < 5 * BOUND, "b never probed alone");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.state(), State::Closed);
    // a trips and recovers alone too.
    let _ = a.send(Call::Fail).await;
    assert_eq!(a.state(), State::Open);
    assert_eq!(c.state(), State::Closed);

    redis.restart();
    let started = Instant::now();
    joined(&redis).await;
    println!(
        "shared breaker: re-subscribed {:?} after the restart",
        started.elapsed()
    );
    // a opened during the outage and tells the fleet when it re-joins (or
    // probed alone first): wait until the fleet is closed again.
    let started = Instant::now();
    while [a.state(), b.state(), c.state()] != [State::Closed; 3] {
        for instance in [&mut a, &mut b, &mut c] {
            let _ = instance.send(Call::Ok).await;
        }
        assert!(started.elapsed() < 5 * BOUND, "the fleet did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Re-joined: a trip on c propagates again.
    let tripped = Instant::now();
    let _ = c.send(Call::Fail).await;
    assert_eq!(c.state(), State::Open);
    let took = within(tripped, BOUND, "a and b open", || {
        a.state() == State::Open && b.state() == State::Open
    })
    .await;
    println!("shared breaker: after re-joining, a trip propagated in {took:?}");

    // One warning per instance and outage, however many retries failed;
    // one re-join each.
    let logs = logs.text();
    let count = |what: &str| logs.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("shared circuit breaker lost Redis"), 3, "{logs}");
    assert!(
        logs.lines()
            .filter(|l| l.contains("shared circuit breaker lost Redis"))
            .all(|l| l.contains("WARN") && l.contains("name=\"payments\"")),
        "{logs}"
    );
    assert_eq!(
        count("shared circuit breaker re-joined the fleet"),
        3,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_stops_with_the_last_layer_service_and_handle() {
    let Some(redis) = RedisServer::start_or_skip("the_background_task_stops") else {
        return;
    };
    let fleet = fleet(&redis, Duration::from_millis(100)).await;
    let downstream = Downstream::new();
    let layer = CircuitBreakerLayer::new(Config::new().name(NAME)).shared(fleet);
    let handle = layer.handle();
    let svc = layer.layer(downstream.service());
    drop(layer);
    subscribed(&redis, 1).await;
    drop(svc);
    // The handle still holds the breaker: the task goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscribers(&redis), 1);
    drop(handle);
    subscribed(&redis, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_subscription_lost_a_trip_still_propagates_within_the_poll_interval() {
    let Some(redis) = RedisServer::start_or_skip("with_the_subscription_lost") else {
        return;
    };
    let poll_interval = Duration::from_millis(300);
    let fleet = fleet(&redis, poll_interval).await;
    let downstream = Downstream::new();
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(Duration::from_secs(60));
    let mut a = Instance::new(&fleet, config.clone(), &downstream);
    let b = Instance::new(&fleet, config.clone(), &downstream);
    let c = Instance::new(&fleet, config, &downstream);
    joined(&redis).await;

    let killed: usize = redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .parse()
        .unwrap();
    assert_eq!(killed, 3, "three subscriber connections");
    let tripped = Instant::now();
    let _ = a.send(Call::Fail).await;
    assert_eq!(a.state(), State::Open);
    let took = within(tripped, poll_interval + BOUND, "b and c open", || {
        b.state() == State::Open && c.state() == State::Open
    })
    .await;
    println!(
        "shared breaker: trip propagated by polling in {took:?} (poll interval {poll_interval:?})"
    );
}

/// One outage counts once, however many retries fail; the next one counts
/// again. On a current-thread runtime, so the background task records into
/// this thread's recorder.
#[cfg(feature = "metrics")]
#[test]
fn each_outage_is_counted_once() {
    use metrics_util::debugging::DebuggingRecorder;

    let Some(mut redis) = RedisServer::start_or_skip("each_outage_is_counted_once") else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outages = "palisade_circuit_breaker_fleet_outages_total{name=\"payments\"}";
    let mut counted = 0.0;
    let mut count = || {
        counted += super::support::metric_values(&snapshotter, "palisade_circuit_breaker_fleet")
            .get(outages)
            .copied()
            .unwrap_or(0.0);
        counted
    };
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let fleet = fleet(&redis, Duration::from_millis(50)).await;
            let downstream = Downstream::new();
            let _instance = Instance::new(&fleet, Config::new(), &downstream);
            subscribed(&redis, 1).await;
            assert_eq!(count(), 0.0);
            for outage in 1..=2 {
                redis.kill();
                // Many failed retries (every 50 ms), one outage.
                tokio::time::sleep(Duration::from_millis(400)).await;
                assert_eq!(count(), f64::from(outage));
                redis.restart();
                subscribed(&redis, 1).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(count(), f64::from(outage), "re-joining is no outage");
            }
        });
    });
}

/// The gRPC breaker shares its state as the plain one does: a trailers-only
/// UNAVAILABLE on one instance opens the other.
#[tokio::test]
async fn a_grpc_breaker_is_shared_too() {
    use palisade::circuit_breaker::GrpcCircuitBreakerLayer;

    let Some(redis) = RedisServer::start_or_skip("a_grpc_breaker_is_shared_too") else {
        return;
    };
    let fleet = fleet(&redis, Duration::from_secs(1)).await;
    let instance = || {
        let layer = GrpcCircuitBreakerLayer::new(
            Config::new()
                .name(NAME)
                .consecutive_failures(nz(1))
                .open_wait(Duration::from_secs(60)),
        )
        .shared(fleet.clone());
        let handle = layer.handle();
        let svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "14")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
        }));
        (svc, handle)
    };
    let (mut a, a_handle) = instance();
    let (_b, b_handle) = instance();
    subscribed(&redis, 2).await;

    let started = Instant::now();
    a.ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(a_handle.state(), State::Open);
    let took = within(started, BOUND, "the other gRPC breaker opens", || {
        b_handle.state() == State::Open
    })
    .await;
    println!("gRPC breaker trip propagated in {took:?}");
}
