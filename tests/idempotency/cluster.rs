//! The Redis store on a private three-master Redis Cluster: one execution
//! per key across instances with records on every master, scripts reloaded
//! on the node that lost them, and a dead master failing only its own
//! records, within the bound, until it is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Response, StatusCode};
use http_body_util::Full;
use palisade::idempotency::{Claim, Completion, IdempotencyLayer, Record, RedisStore, Store};
use tokio::time::Instant;

use crate::common::{Handler, harness, post, send};
use crate::store_contract::{claimed, fp, stored, token};
use crate::support::RedisCluster;

/// A store with a generous bound: these tests check outcomes, not latency,
/// on a machine that may be busy.
async fn store(cluster: &RedisCluster) -> RedisStore {
    RedisStore::connect_cluster(&cluster.urls())
        .await
        .expect("connect")
        .timeout(Duration::from_secs(5))
}

const LEASE: Duration = Duration::from_secs(60);

/// Two instances, 100 keys, 8 duplicates of each split between them: one
/// execution per key. Every executing handler waits until all the other
/// duplicates were answered, so they truly overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_on_two_instances_run_once_per_key_on_every_master() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_duplicates_run_once") else {
        return;
    };
    const KEYS: usize = 100;
    const DUPLICATES: usize = 8;
    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (open, gate) = tokio::sync::watch::channel(false);
    let record = runs.clone();
    let handler: Handler = Arc::new(move |req, _| {
        let key = req.headers()["idempotency-key"]
            .to_str()
            .unwrap()
            .to_owned();
        *record.lock().unwrap().entry(key.clone()).or_default() += 1;
        let mut gate = gate.clone();
        Box::pin(async move {
            gate.wait_for(|open| *open).await.unwrap();
            Response::new(Full::new(Bytes::from(format!("ran {key}"))))
        })
    });
    let (a, _) = harness(
        IdempotencyLayer::with_store(store(&cluster).await),
        handler.clone(),
    );
    let (b, _) = harness(IdempotencyLayer::with_store(store(&cluster).await), handler);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("order-{i}")).collect();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for dup in 0..DUPLICATES {
        for (i, key) in keys.iter().enumerate() {
            let app = if (i + dup) % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            let (done, key) = (done_tx.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let answer = send(&app, post(Some(&key), "{}")).await;
                let _ = done.send(());
                (key, answer)
            }));
        }
    }
    for answered in 0..KEYS * (DUPLICATES - 1) {
        tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {answered} duplicates were answered: a key runs more than once")
            });
    }
    open.send(true).unwrap();
    let answers = join_all(tasks).await;

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), KEYS, "every key ran");
    assert!(runs.values().all(|&n| n == 1), "a key ran twice: {runs:?}");
    let mut statuses: HashMap<StatusCode, usize> = HashMap::new();
    for answer in answers {
        let (key, answer) = answer.unwrap();
        *statuses.entry(answer.status).or_default() += 1;
        if answer.status == StatusCode::OK {
            assert_eq!(answer.body, format!("ran {key}"));
        }
    }
    assert_eq!(statuses[&StatusCode::OK], KEYS, "{statuses:?}");
    assert_eq!(
        statuses[&StatusCode::CONFLICT],
        KEYS * (DUPLICATES - 1),
        "{statuses:?}"
    );
    for key in &keys {
        let late = send(&b, post(Some(key), "{}")).await;
        assert!(late.replayed(), "{key}");
        assert_eq!(late.body, format!("ran {key}"));
    }
    // A record and a fencing counter per key, on every master.
    let sizes = cluster.key_counts();
    assert_eq!(sizes.iter().sum::<usize>(), 2 * KEYS, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n > 0),
        "a master holds no record: {sizes:?}"
    );
}

#[tokio::test]
async fn a_claim_keeps_record_and_fence_in_one_slot_even_for_odd_keys() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_claim_one_slot") else {
        return;
    };
    let s = store(&cluster).await;
    // An empty key, or one that starts with `}`, would give Redis an empty
    // hash tag: record and counter in two slots (CROSSSLOT).
    for key in ["plain", "", "}", "}x", "{"] {
        let lease = claimed(&s, key, LEASE).await;
        let record = s.record_key(key);
        let fence = format!("{record}:fence");
        let node = cluster.node_for_key(&record);
        assert_eq!(node.cli(&["EXISTS", &record, &fence]), "2", "{key:?}");
        let done = s.complete(key, lease, Completion::NotRetained, LEASE).await;
        assert!(done.unwrap(), "{key:?}");
    }
}

#[tokio::test]
async fn script_flush_on_a_node_reloads_the_script_there() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_idempotency_script_flush") else {
        return;
    };
    let s = store(&cluster).await;
    let lease = claimed(&s, "flushed", LEASE).await;
    let node = cluster.node_for_key(&s.record_key("flushed"));
    assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
    let done = s
        .complete(
            "flushed",
            lease,
            Completion::Retained(stored("kept")),
            LEASE,
        )
        .await;
    assert!(
        done.unwrap(),
        "the completion script was reloaded on its node"
    );
    assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
    match s.claim("flushed", &fp(1), token(), LEASE).await.unwrap() {
        Claim::Existing(Record::Completed { response, .. }) => {
            assert_eq!(response, Some(stored("kept")));
        }
        other => panic!("expected the completed record, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_fails_only_its_records_within_the_bound_then_recovers() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_idempotency_dead_master") else {
        return;
    };
    cluster.serve_without_full_coverage();
    let bound = Duration::from_millis(100);
    let strict = store(&cluster).await.timeout(bound);
    let victim_port = cluster.nodes()[0].port();
    let (mut dead_keys, mut live_keys) = (Vec::new(), Vec::new());
    for i in 0.. {
        let key = format!("order-{i}");
        if cluster.node_for_key(&strict.record_key(&key)).port() == victim_port {
            if dead_keys.len() < 3 {
                dead_keys.push(key);
            }
        } else if live_keys.len() < 6 {
            live_keys.push(key);
        }
        if dead_keys.len() == 3 && live_keys.len() == 6 {
            break;
        }
    }
    let (victim, _) = cluster.nodes().split_first_mut().unwrap();
    victim.kill();

    let mut slowest = Duration::ZERO;
    for key in &dead_keys {
        for _ in 0..3 {
            let started = Instant::now();
            let claim = strict.claim(key, &fp(1), token(), LEASE).await;
            slowest = slowest.max(started.elapsed());
            assert!(claim.is_err(), "{key}: {claim:?}");
        }
    }
    // The bound plus scheduling slack on a busy machine.
    assert!(
        slowest < Duration::from_secs(1),
        "a dead-slot step took {slowest:?}"
    );
    // The other masters' records: claimed once, then in flight, then done.
    let patient = strict.clone().timeout(Duration::from_secs(5));
    for key in &live_keys {
        let lease = claimed(&patient, key, LEASE).await;
        assert!(matches!(
            patient.claim(key, &fp(1), token(), LEASE).await.unwrap(),
            Claim::Existing(Record::InFlight { .. })
        ));
        let done = patient.complete(key, lease, Completion::NotRetained, LEASE);
        assert!(done.await.unwrap());
    }

    victim.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while patient
        .claim(&dead_keys[0], &fp(1), token(), LEASE)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "its records did not come back within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in &dead_keys[1..] {
        claimed(&patient, key, LEASE).await;
    }
}

#[cfg(feature = "metrics")]
#[test]
fn every_step_is_timed_and_every_failure_counted() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_idempotency_metrics") else {
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
            let s = store(&cluster).await.timeout(Duration::from_millis(100));
            let lease = claimed(&s, "k", LEASE).await;
            assert!(matches!(
                s.claim("k", &fp(1), token(), LEASE).await.unwrap(),
                Claim::Existing(_)
            ));
            assert!(s.release("k", lease.token).await.unwrap());
            let lease = claimed(&s, "k", LEASE).await;
            let done = s.complete("k", lease, Completion::NotRetained, LEASE);
            assert!(done.await.unwrap());
            cluster.node_for_key(&s.record_key("k")).kill();
            assert!(s.claim("k", &fp(1), token(), LEASE).await.is_err());
        })
    });
    let samples = crate::support::metric_samples(&snapshotter, "palisade_store_");
    let of = |metric: &str, op: &str| {
        let key = format!(
            "palisade_store_{metric}{{layer=\"idempotency\",store=\"redis_cluster\",op=\"{op}\"}}"
        );
        samples.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!(of("duration_seconds", "claim"), 4.0, "{samples:?}");
    assert_eq!(of("duration_seconds", "release"), 1.0, "{samples:?}");
    assert_eq!(of("duration_seconds", "complete"), 1.0, "{samples:?}");
    assert_eq!(of("errors_total", "claim"), 1.0, "{samples:?}");
    assert_eq!(of("errors_total", "complete"), 0.0, "{samples:?}");
}
