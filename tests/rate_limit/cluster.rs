//! The Redis store on a private three-master Redis Cluster: exact for keys
//! on every master, one slot per multi-quota decision, scripts reloaded on
//! the node that lost them, and a dead master failing only its own slots,
//! within the bound, until it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{
    Limits, OnStoreError, Quota, RateLimitLayer, RedisStore, Store, StoreError,
};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::RedisCluster;

/// A store with a generous bound: these tests check counts, not latency,
/// on a machine that may be busy.
async fn store(cluster: &RedisCluster) -> RedisStore {
    RedisStore::connect_cluster(&cluster.urls())
        .await
        .unwrap()
        .timeout(Duration::from_secs(5))
}

fn hourly(burst: u32) -> Limits {
    Limits::new([Quota::with_interval(Duration::from_secs(3600)).burst(burst)])
}

/// Sends `per_key` concurrent decisions for every key (alternating between
/// `stores`) and returns how many each key was allowed, and the slowest.
async fn allowed_per_key(
    stores: &[RedisStore],
    keys: &[String],
    limits: &Limits,
    per_key: usize,
) -> (HashMap<String, usize>, Duration) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        for j in 0..per_key {
            let (s, key, limits) = (
                stores[(i + j) % stores.len()].clone(),
                key.clone(),
                limits.clone(),
            );
            tasks.spawn(async move {
                let started = Instant::now();
                let d = s.check(&key, &limits, 1).await;
                let d = d.unwrap_or_else(|e| panic!("decision for {key} failed: {e}"));
                (key, d.is_allowed(), started.elapsed())
            });
        }
    }
    let mut allowed: HashMap<String, usize> = keys.iter().map(|k| (k.clone(), 0)).collect();
    let mut slowest = Duration::ZERO;
    while let Some(done) = tasks.join_next().await {
        let (key, ok, took) = done.unwrap();
        *allowed.get_mut(&key).unwrap() += usize::from(ok);
        slowest = slowest.max(took);
    }
    (allowed, slowest)
}

fn assert_exact(allowed: &HashMap<String, usize>, burst: usize) {
    let wrong: Vec<_> = allowed.iter().filter(|(_, n)| **n != burst).collect();
    assert!(
        wrong.is_empty(),
        "keys not allowed exactly {burst}: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_allow_exactly_the_burst_of_every_key_on_every_master() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_exact_on_every_master") else {
        return;
    };
    // One instance with the deny cache, one without: both count in Redis.
    let stores = [
        store(&cluster).await,
        store(&cluster).await.deny_cache(false),
    ];
    let keys: Vec<String> = (0..200).map(|i| format!("client-{i}")).collect();
    let (allowed, _) = allowed_per_key(&stores, &keys, &hourly(5), 8).await;
    assert_exact(&allowed, 5);

    // One key per client, and every master holds some of them.
    let sizes = cluster.key_counts();
    assert_eq!(sizes.iter().sum::<usize>(), keys.len(), "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n > 0),
        "a master holds no key: {sizes:?}"
    );
}

#[tokio::test]
async fn a_multi_quota_decision_keeps_its_keys_in_one_slot_even_for_odd_keys() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_multi_quota_one_slot") else {
        return;
    };
    let s = store(&cluster).await.deny_cache(false);
    let limits =
        Limits::new([Quota::per_minute(3), Quota::per_hour(5).named("hour")]).scoped("orders");
    // An empty key, or one that starts with `}`, would give Redis an empty
    // hash tag and each quota key a slot of its own (CROSSSLOT).
    for key in ["user:7", "", "}", "}x", "{", "a}b", "\\"] {
        for i in 0..3 {
            let d = s.check(key, &limits, 1).await;
            let d = d.unwrap_or_else(|e| panic!("{key:?}: {e}"));
            assert!(d.is_allowed(), "{key:?}: request {i}");
        }
        let d = s.check(key, &limits, 1).await.unwrap();
        assert!(!d.is_allowed(), "{key:?}");
        assert_eq!(d.quota(), 0, "{key:?}: the minute quota binds");

        let keys = s.keys(key, &limits);
        assert_eq!(keys.len(), 2);
        let node = cluster.node_for_key(&keys[0]);
        assert_eq!(
            node.cli(&["EXISTS", &keys[0], &keys[1]]),
            "2",
            "{key:?}: both quota keys on one node, in one slot: {keys:?}"
        );
    }
}

#[tokio::test]
async fn script_flush_on_a_node_reloads_the_script_there_even_with_another_master_dead() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_script_flush") else {
        return;
    };
    cluster.serve_without_full_coverage();
    let s = store(&cluster).await.deny_cache(false);
    let limits = Limits::new([Quota::per_hour(10)]);
    let key = "flushed";
    for _ in 0..3 {
        assert!(s.check(key, &limits, 1).await.unwrap().is_allowed());
    }
    let sha = redis::Script::new(include_str!("../../src/rate_limit/store/redis/gcra.lua"))
        .get_hash()
        .to_owned();
    let port = cluster.node_for_key(&s.keys(key, &limits)[0]).port();
    let nodes = cluster.nodes();
    let home = nodes.iter().position(|n| n.port() == port).unwrap();

    assert_eq!(nodes[home].cli(&["SCRIPT", "FLUSH"]), "OK");
    let d = s.check(key, &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 6, "the count went on across the reload");
    assert_eq!(nodes[home].cli(&["SCRIPT", "EXISTS", &sha]), "1");

    // The reload needs only the key's own node: a dead master elsewhere
    // does not fail it.
    nodes[(home + 1) % 3].kill();
    assert_eq!(nodes[home].cli(&["SCRIPT", "FLUSH"]), "OK");
    let d = s.check(key, &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 5);
    assert_eq!(nodes[home].cli(&["SCRIPT", "EXISTS", &sha]), "1");
}

#[tokio::test]
async fn a_slot_moving_between_masters_is_followed_by_ask_then_moved() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_slot_migration") else {
        return;
    };
    let s = store(&cluster).await.deny_cache(false);
    // One quota: during a migration Redis refuses (TRYAGAIN) a multi-key
    // call whose keys are on neither side yet.
    let limits = hourly(3);
    let key = "migrating";
    let keys = s.keys(key, &limits);
    let source_port = cluster.node_for_key(&keys[0]).port();
    let nodes = cluster.nodes();
    let slot = nodes[0].cli(&["CLUSTER", "KEYSLOT", &keys[0]]);
    let src = nodes.iter().position(|n| n.port() == source_port).unwrap();
    let dst = (src + 1) % 3;
    let (src_id, dst_id) = (
        nodes[src].cli(&["CLUSTER", "MYID"]),
        nodes[dst].cli(&["CLUSTER", "MYID"]),
    );
    let setslot = |node: usize, args: &[&str]| {
        let mut cmd = vec!["CLUSTER", "SETSLOT", &slot];
        cmd.extend_from_slice(args);
        assert_eq!(nodes[node].cli(&cmd), "OK", "{cmd:?}");
    };
    setslot(dst, &["IMPORTING", &src_id]);
    setslot(src, &["MIGRATING", &dst_id]);

    // The keys are new: the source answers ASK, and the decision runs on
    // the target (which has not seen the script yet).
    for i in 0..2 {
        let d = s.check(key, &limits, 1).await;
        assert!(d.unwrap().is_allowed(), "request {i}");
    }
    let count = |node: usize| nodes[node].cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot]);
    assert_eq!(count(dst), "1", "the key is on the target");
    assert_eq!(count(src), "0");

    // The migration ends; the store still sends the slot to the source,
    // which answers MOVED.
    for node in [dst, src, (src + 2) % 3] {
        setslot(node, &["NODE", &dst_id]);
    }
    let d = s.check(key, &limits, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 0, "the count went on across the move");
    assert!(!s.check(key, &limits, 1).await.unwrap().is_allowed());
}

/// A fourth master joins after the store read the slot map, and `key`'s
/// slot starts moving to it; returns the slot and the new master's index.
/// The old master then answers `ASK` (the key is not there) with an address
/// the store's map lacks, and an `ASK` does not make the store read the map
/// again: every call needs the new master.
fn move_slot_to_a_new_master(cluster: &mut RedisCluster, key: &str) -> (u16, usize) {
    let slot = cluster.key_slot(key);
    let from = cluster.slot_owner(slot);
    let new = cluster.add_master();
    cluster.start_slot_migration(slot, from, new);
    (slot, new)
}

/// `rounds` rounds of `callers` concurrent decisions for `key`, every one
/// allowed.
async fn concurrent_rounds(
    s: &RedisStore,
    key: &str,
    limits: &Limits,
    rounds: usize,
    callers: usize,
) {
    let keys = [key.to_owned()];
    for _ in 0..rounds {
        let (allowed, _) = allowed_per_key(std::slice::from_ref(s), &keys, limits, callers).await;
        assert_exact(&allowed, callers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_redirected_to_a_master_the_map_lacks_share_one_connection_to_it() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_redirect_connections") else {
        return;
    };
    let s = store(&cluster).await.deny_cache(false);
    let limits = hourly(1_000_000);
    let key = "resharded";
    let (slot, new) = move_slot_to_a_new_master(&mut cluster, &s.keys(key, &limits)[0]);
    // Client connections the new master accepted while `load` ran (each
    // reading opens one of its own).
    let connections_during = async |cluster: &mut RedisCluster, load| {
        let before = cluster.nodes()[new].connections_received();
        let () = load.await;
        cluster.nodes()[new].connections_received() - 1 - before
    };

    // Every call is asked to the new master (before the fix: one
    // connection per call, and one more for the script's first EVAL).
    let asked = connections_during(&mut cluster, concurrent_rounds(&s, key, &limits, 4, 64)).await;
    // The slot lands there: the old master answers MOVED until the store
    // has read the map again.
    cluster.finish_slot_migration(slot, new);
    let moved = connections_during(&mut cluster, concurrent_rounds(&s, key, &limits, 4, 64)).await;

    let node = &cluster.nodes()[new];
    let in_slot = node.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(in_slot, "1", "the key is on the new master");
    // One connection, which the map takes over; a spare one for a refresh
    // that lands while it is being opened.
    assert!(
        asked + moved <= 2,
        "the new master saw {asked} connections during the migration and {moved} after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_to_a_new_master_fails_every_caller_waiting_for_it_and_is_tried_again()
{
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_redirect_connect_fails") else {
        return;
    };
    let s = store(&cluster).await.deny_cache(false);
    let limits = hourly(1_000_000);
    let key = "resharded";
    let (_, new) = move_slot_to_a_new_master(&mut cluster, &s.keys(key, &limits)[0]);
    cluster.nodes()[new].kill();

    // Every caller is asked to the dead master and waits for the one
    // attempt, which fails (connection refused, after its retries) well
    // within their bound of 5 s: each hears of that failure, none times out.
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (s, limits) = (s.clone(), limits.clone());
        callers.spawn(async move { s.check(key, &limits, 1).await });
    }
    while let Some(done) = callers.join_next().await {
        match done.unwrap() {
            Err(StoreError::Redis(_)) => {}
            other => panic!("expected the attempt's error, got {other:?}"),
        }
    }

    // The failure is not kept: once the master is back, a call connects.
    cluster.nodes()[new].restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(err) = s.check(key, &limits, 1).await {
        assert!(
            Instant::now() < deadline,
            "no call reached the restarted master within 20 s: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_while_a_new_master_is_connected_leave_the_attempt_to_others() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_redirect_connect_dropped") else {
        return;
    };
    let patient = store(&cluster).await.deny_cache(false);
    let impatient = patient.clone().timeout(Duration::from_millis(200));
    let limits = hourly(1_000_000);
    let key = "resharded";
    let (_, new) = move_slot_to_a_new_master(&mut cluster, &patient.keys(key, &limits)[0]);
    let before = cluster.nodes()[new].connections_received();

    // The new master is stopped: the attempt hangs, and every caller gives
    // up (its future dropped) while it waits.
    cluster.nodes()[new].pause();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (s, limits) = (impatient.clone(), limits.clone());
        callers.spawn(async move { s.check(key, &limits, 1).await });
    }
    while let Some(done) = callers.join_next().await {
        match done.unwrap() {
            Err(StoreError::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    // Back: the attempt goes on without them, and later callers share it.
    cluster.nodes()[new].resume();
    concurrent_rounds(&patient, key, &limits, 2, 16).await;
    let seen = cluster.nodes()[new].connections_received() - 1 - before;
    assert!(seen <= 2, "the new master saw {seen} connections");
}

fn key_header(req: &Request<()>) -> Option<String> {
    Some(req.headers().get("x-key")?.to_str().ok()?.to_owned())
}

/// Sends one request for `key` and returns how long the answer took.
async fn call<S>(svc: &S, key: &str, status: StatusCode) -> Duration
where
    S: tower::Service<Request<()>, Response = http::Response<bytes::Bytes>> + Clone,
    S::Error: std::fmt::Debug,
{
    let req = Request::builder().header("x-key", key).body(()).unwrap();
    let started = Instant::now();
    let resp = svc.clone().oneshot(req).await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), status, "{key}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_fails_only_its_slots_within_the_bound_then_recovers() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_dead_master") else {
        return;
    };
    cluster.serve_without_full_coverage();
    let bound = Duration::from_millis(50);
    let strict = RedisStore::connect_cluster(&cluster.urls())
        .await
        .unwrap()
        .timeout(bound);
    // The same connection, with room for a busy machine: for exact counts.
    let patient = strict.clone().timeout(Duration::from_secs(5));

    let victim_port = cluster.nodes()[0].port();
    let (mut dead_keys, mut live_keys) = (Vec::new(), Vec::new());
    for i in 0.. {
        let key = format!("client-{i}");
        let port = cluster
            .node_for_key(&strict.keys(&key, &hourly(1))[0])
            .port();
        if port == victim_port {
            if dead_keys.len() < 4 {
                dead_keys.push(key);
            }
        } else if live_keys.len() < 12 {
            live_keys.push(key);
        }
        if dead_keys.len() == 4 && live_keys.len() == 12 {
            break;
        }
    }

    let quota = Quota::with_interval(Duration::from_secs(3600)).burst(3);
    let svc = |policy| {
        ServiceBuilder::new()
            .layer(ProblemLayer::new())
            .layer(
                RateLimitLayer::redis(strict.clone(), quota.clone())
                    .on_store_error(policy)
                    .scope(format!("{policy:?}"))
                    .key(key_header),
            )
            .service(service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
            }))
    };
    let (open, closed) = (svc(OnStoreError::FailOpen), svc(OnStoreError::FailClosed));
    for key in &dead_keys {
        call(&closed, key, StatusCode::OK).await;
    }

    let (victim, others) = cluster.nodes().split_first_mut().unwrap();
    victim.kill();
    let done = AtomicBool::new(false);
    // Decisions on the dead master's slots, until the live ones are checked.
    let dead_traffic = async {
        let (mut slowest, mut rounds) = (Duration::ZERO, 0);
        while !done.load(Ordering::Relaxed) {
            for key in &dead_keys {
                slowest = slowest.max(call(&open, key, StatusCode::OK).await);
                slowest = slowest.max(call(&closed, key, StatusCode::SERVICE_UNAVAILABLE).await);
            }
            rounds += 1;
        }
        (slowest, rounds)
    };
    // Meanwhile the other masters' keys stay exact, through the same
    // connection: once right after the kill, once the cluster has marked
    // the dead master failed.
    let live_traffic = async {
        let (allowed, mut slowest) = allowed_per_key(
            std::slice::from_ref(&patient),
            &live_keys,
            &hourly(3).scoped("a"),
            6,
        )
        .await;
        assert_exact(&allowed, 3);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !others[0].cli(&["CLUSTER", "NODES"]).lines().any(|l| {
            l.contains(&format!(":{victim_port}@")) && l.contains(",fail") && !l.contains("fail?")
        }) {
            assert!(
                Instant::now() < deadline,
                "the dead master was never marked failed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (allowed, took) = allowed_per_key(
            std::slice::from_ref(&patient),
            &live_keys,
            &hourly(3).scoped("b"),
            6,
        )
        .await;
        assert_exact(&allowed, 3);
        done.store(true, Ordering::Relaxed);
        slowest = slowest.max(took);
        slowest
    };
    let ((dead_slowest, rounds), live_slowest) = tokio::join!(dead_traffic, live_traffic);
    assert!(rounds > 0);
    // The bound plus scheduling slack on a busy machine: a decision stalled
    // by the dead master (reconnects, slot refreshes, retry sleeps) would
    // take seconds.
    assert!(
        dead_slowest < Duration::from_secs(1),
        "a dead-slot decision took {dead_slowest:?}"
    );
    assert!(
        live_slowest < Duration::from_secs(1),
        "a live-slot decision took {live_slowest:?}"
    );

    victim.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::builder()
            .header("x-key", &dead_keys[0])
            .body(())
            .unwrap();
        let resp = closed.clone().oneshot(req).await.unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "its slots did not come back within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted master is empty: exact again from fresh buckets.
    let (allowed, _) = allowed_per_key(
        &[strict.clone().timeout(Duration::from_secs(5))],
        &dead_keys,
        &hourly(3).scoped("c"),
        6,
    )
    .await;
    assert_exact(&allowed, 3);
}

#[cfg(feature = "metrics")]
#[test]
fn every_round_trip_is_timed_and_every_failure_counted() {
    let Some(mut redis) = crate::support::RedisServer::start_or_skip("store_metrics") else {
        return;
    };
    let Some(cluster) = RedisCluster::start_or_skip("store_metrics") else {
        return;
    };
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let limits = hourly(2);
            let single = RedisStore::connect(&redis.url())
                .await
                .unwrap()
                .timeout(Duration::from_secs(5));
            // Two allowed and one denied by Redis; then one denied by the
            // local deny cache, which is no round trip.
            for allowed in [true, true, false, false] {
                let d = single.check("k", &limits, 1).await.unwrap();
                assert_eq!(d.is_allowed(), allowed);
            }
            let clustered = store(&cluster).await;
            assert!(clustered.check("k", &limits, 1).await.unwrap().is_allowed());
            redis.kill();
            let single = single.timeout(Duration::from_millis(50));
            for _ in 0..2 {
                assert!(single.check("other", &limits, 1).await.is_err());
            }
        })
    });
    let samples = crate::support::metric_samples(&snapshotter, "palisade_store_");
    let of = |metric: &str, store: &str| {
        let key = format!("{metric}{{layer=\"rate_limit\",store=\"{store}\",op=\"decide\"}}");
        samples.get(&key).copied().unwrap_or(0.0) as usize
    };
    let (duration, errors) = (
        "palisade_store_duration_seconds",
        "palisade_store_errors_total",
    );
    assert_eq!(of(duration, "redis"), 5, "{samples:?}");
    assert_eq!(of(errors, "redis"), 2, "{samples:?}");
    assert_eq!(of(duration, "redis_cluster"), 1, "{samples:?}");
    assert_eq!(of(errors, "redis_cluster"), 0, "{samples:?}");
}
