//! The fleet-wide store on a private redis-server: one limit across
//! instances, leases that outlive no crash, fencing, no permit leaked by a
//! dropped future, store failures as the layer's policy says, and a Redis
//! Cluster.
//!
//! Redis keeps the leases' time, so these tests run on real time; every wait
//! is bounded with wide margins and polled, never slept and assumed.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use palisade::bulkhead::{BulkheadLayer, Error, OnStoreError, RedisStore, StoreError};
use palisade::load_shed::{Queue, Reason};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::proxy::FaultProxy;
use crate::support::{CapturedLogs, RedisCluster, RedisServer};

/// The key every test's bulkhead counts under: namespace `partner`, one
/// global key.
const KEY: &str = "partner:global";

/// What a call does in the downstream.
enum Hold {
    /// Works this long.
    For(Duration),
    /// Works until told to stop (or the sender is dropped).
    Until(oneshot::Receiver<()>),
}

/// Counts the downstream's calls: in flight now, the most at once, entered.
#[derive(Clone, Default)]
struct Counter {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    entered: Arc<AtomicUsize>,
}

impl Counter {
    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

type Svc = BoxCloneSyncService<Hold, (), Error<Infallible>>;

/// A bulkhead of `limit` over `store` in front of a counting downstream.
fn bulkhead(
    store: RedisStore,
    limit: u32,
    queue: Option<Queue>,
    on_error: OnStoreError,
    counter: &Counter,
) -> Svc {
    let counter = counter.clone();
    let mut layer = BulkheadLayer::with_store(store, NonZeroU32::new(limit).unwrap())
        .namespace("partner")
        .on_store_error(on_error);
    if let Some(queue) = queue {
        layer = layer.queue(queue);
    }
    let downstream = service_fn(move |hold: Hold| {
        let counter = counter.clone();
        async move {
            counter.entered.fetch_add(1, Ordering::SeqCst);
            let now = counter.now.fetch_add(1, Ordering::SeqCst) + 1;
            counter.most.fetch_max(now, Ordering::SeqCst);
            match hold {
                Hold::For(d) => tokio::time::sleep(d).await,
                Hold::Until(rx) => {
                    let _ = rx.await;
                }
            }
            counter.now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(())
        }
    });
    BoxCloneSyncService::new(ServiceBuilder::new().layer(layer).service(downstream))
}

fn queue(len: usize, wait: Duration) -> Option<Queue> {
    Some(Queue::new(len, wait).unwrap())
}

/// A store with a generous bound: these tests check counts, not latency,
/// on a machine that may be busy.
async fn store(url: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .unwrap()
        .timeout(Duration::from_secs(5))
}

/// Polls `done` every 5 ms until it holds; panics after `within`.
async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The tokens holding leases of the test key.
fn leases(redis: &RedisServer, store: &RedisStore) -> Vec<String> {
    let out = redis.cli(&["ZRANGE", &store.key(KEY), "0", "-1"]);
    out.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

fn is_shed(result: &Result<(), Error<Infallible>>, reason: Reason) -> bool {
    matches!(result, Err(Error::Shed(shed)) if shed.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_never_run_more_than_the_fleet_limit_and_serve_every_queued_caller() {
    let Some(redis) = RedisServer::start_or_skip("three_instances_never_run_more") else {
        return;
    };
    let counter = Counter::default();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let store = store(&redis.url()).await;
        let svc = bulkhead(
            store.clone(),
            10,
            queue(300, Duration::from_secs(60)),
            OnStoreError::FailClosed,
            &counter,
        );
        instances.push((store, svc));
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let svc = instances[i % 3].1.clone();
        calls.spawn(svc.oneshot(Hold::For(Duration::from_millis(3))));
    }
    let mut served = 0;
    while let Some(result) = calls.join_next().await {
        result.unwrap().expect("a queue this long serves everyone");
        served += 1;
    }
    assert_eq!(served, 300);
    assert_eq!(counter.entered(), 300);
    let most = counter.most();
    assert!(most <= 10, "{most} calls ran at once, the fleet allows 10");
    assert!(most >= 2, "the instances ran calls concurrently: {most}");
    let (store, _) = &instances[0];
    eventually("every lease released", Duration::from_secs(5), || {
        leases(&redis, store).is_empty()
    })
    .await;
    for (store, _) in &instances {
        assert_eq!((store.in_flight(KEY), store.queued(KEY)), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_queue_the_fleet_refuses_at_once_what_is_over_the_limit() {
    let Some(redis) = RedisServer::start_or_skip("without_a_queue_the_fleet_refuses") else {
        return;
    };
    let counter = Counter::default();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let store = store(&redis.url()).await;
        instances.push(bulkhead(
            store,
            10,
            None,
            OnStoreError::FailClosed,
            &counter,
        ));
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let svc = instances[i % 3].clone();
        calls.spawn(svc.oneshot(Hold::For(Duration::from_millis(20))));
    }
    let (mut served, mut full) = (0, 0);
    while let Some(result) = calls.join_next().await {
        let result = result.unwrap();
        if result.is_ok() {
            served += 1;
        } else {
            assert!(is_shed(&result, Reason::Full), "{result:?}");
            full += 1;
        }
    }
    assert_eq!(served + full, 300);
    assert_eq!(counter.entered(), served);
    let most = counter.most();
    assert!(most <= 10, "{most} calls ran at once, the fleet allows 10");
    assert!(served >= 10, "at least the first ten are served: {served}");
}

/// Polls `fut` until the downstream has seen `entered` calls, then forgets
/// it: its permit is never dropped.
async fn leak(fut: impl Future + Send + 'static, counter: &Counter, entered: usize) {
    let mut fut = Box::pin(fut);
    eventually(
        "the call entered the downstream",
        Duration::from_secs(5),
        || {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            counter.entered() == entered
        },
    )
    .await;
    std::mem::forget(fut);
}

#[test]
fn a_crashed_instance_frees_its_permits_within_the_lease() {
    let Some(redis) = RedisServer::start_or_skip("a_crashed_instance_frees_its_permits") else {
        return;
    };
    let lease = Duration::from_millis(500);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // The crashed instance: three leases taken, their permits leaked, then
    // its runtime (its renewer, its connection) gone.
    let crashed = runtime();
    let counter = Counter::default();
    let held = crashed.block_on(async {
        let store = store(&redis.url()).await.lease(lease);
        let svc = bulkhead(store.clone(), 3, None, OnStoreError::FailClosed, &counter);
        for i in 1..=3 {
            let (tx, rx) = oneshot::channel();
            std::mem::forget(tx);
            leak(svc.clone().oneshot(Hold::Until(rx)), &counter, i).await;
        }
        leases(&redis, &store)
    });
    assert_eq!(held.len(), 3);
    drop(crashed);
    let crashed_at = Instant::now();

    runtime().block_on(async {
        let counter = Counter::default();
        let store = store(&redis.url()).await.lease(lease);
        let svc = bulkhead(
            store.clone(),
            3,
            queue(3, Duration::from_secs(5)),
            OnStoreError::FailClosed,
            &counter,
        );
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            senders.push(tx);
            calls.push(tokio::spawn(svc.clone().oneshot(Hold::Until(rx))));
        }
        eventually("the crashed leases expired", Duration::from_secs(4), || {
            counter.entered() == 3
        })
        .await;
        // Renewed at most a third of a lease before the crash: gone within
        // the lease after it, and not long before.
        let freed_after = crashed_at.elapsed();
        assert!(
            freed_after < lease + Duration::from_secs(2),
            "{freed_after:?}"
        );
        let now = leases(&redis, &store);
        assert_eq!(now.len(), 3);
        assert!(now.iter().all(|t| !held.contains(t)), "{now:?} vs {held:?}");
        for tx in senders {
            tx.send(()).unwrap();
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        eventually("every lease released", Duration::from_secs(5), || {
            leases(&redis, &store).is_empty()
        })
        .await;
    });
}

#[tokio::test]
async fn a_held_lease_is_renewed_for_as_long_as_it_is_held() {
    let Some(redis) = RedisServer::start_or_skip("a_held_lease_is_renewed") else {
        return;
    };
    // Renewed every 300 ms: a renewal may come 600 ms late before the lease
    // runs out.
    let lease = Duration::from_millis(900);
    let a = store(&redis.url()).await.lease(lease);
    let b = store(&redis.url()).await.lease(lease);
    let counter = Counter::default();
    let svc_a = bulkhead(a.clone(), 1, None, OnStoreError::FailClosed, &counter);
    let svc_b = bulkhead(b, 1, None, OnStoreError::FailClosed, &counter);
    let (done, rx) = oneshot::channel();
    let call = tokio::spawn(svc_a.oneshot(Hold::Until(rx)));
    eventually("A holds the lease", Duration::from_secs(5), || {
        counter.entered() == 1
    })
    .await;
    let token = leases(&redis, &a);
    assert_eq!(token.len(), 1);
    let started = Instant::now();
    while started.elapsed() < lease * 3 {
        assert_eq!(leases(&redis, &a), token, "after {:?}", started.elapsed());
        let refused = svc_b.clone().oneshot(Hold::For(Duration::ZERO)).await;
        assert!(is_shed(&refused, Reason::Full), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.send(()).unwrap();
    call.await.unwrap().unwrap();
    eventually("the lease released", Duration::from_secs(5), || {
        leases(&redis, &a).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_holder_whose_lease_expired_cannot_release_the_next_holders_lease() {
    let Some(redis) = RedisServer::start_or_skip("a_holder_whose_lease_expired") else {
        return;
    };
    let logs = CapturedLogs::start();
    let proxy = FaultProxy::start(redis.port()).await;
    let lease = Duration::from_millis(400);
    // A reaches Redis through the proxy, B directly.
    let a = RedisStore::connect(&proxy.url())
        .await
        .unwrap()
        .lease(lease)
        .timeout(Duration::from_millis(100));
    let b = store(&redis.url()).await.lease(lease);
    let counter = Counter::default();
    let svc_a = bulkhead(a.clone(), 1, None, OnStoreError::FailClosed, &counter);
    let svc_b = bulkhead(
        b,
        1,
        queue(1, Duration::from_secs(5)),
        OnStoreError::FailClosed,
        &counter,
    );

    let (done_a, rx) = oneshot::channel();
    let call_a = tokio::spawn(svc_a.clone().oneshot(Hold::Until(rx)));
    eventually("A holds the lease", Duration::from_secs(5), || {
        counter.entered() == 1
    })
    .await;
    let token_a = leases(&redis, &a);
    assert_eq!(token_a.len(), 1);

    // A cannot renew: its lease expires and B takes the permit.
    proxy.stall();
    let (done_b, rx) = oneshot::channel();
    let call_b = tokio::spawn(svc_b.oneshot(Hold::Until(rx)));
    eventually("B takes the expired lease", Duration::from_secs(5), || {
        counter.entered() == 2
    })
    .await;
    let token_b = leases(&redis, &a);
    assert_eq!(token_b.len(), 1);
    assert_ne!(token_a, token_b);
    proxy.restore();
    eventually(
        "A's renewer finds its lease gone",
        Duration::from_secs(5),
        || logs.text().contains("ran past its lease"),
    )
    .await;

    // A finishes and releases: B's lease stays.
    let before = redis.command_calls(&["zrem"]);
    done_a.send(()).unwrap();
    call_a.await.unwrap().unwrap();
    eventually("A's release reached Redis", Duration::from_secs(5), || {
        redis.command_calls(&["zrem"]) > before
    })
    .await;
    assert_eq!(leases(&redis, &a), token_b);
    // The fleet's one permit is still B's.
    let refused = svc_a.clone().oneshot(Hold::For(Duration::ZERO)).await;
    assert!(is_shed(&refused, Reason::Full), "{refused:?}");
    assert_eq!(counter.entered(), 2);

    done_b.send(()).unwrap();
    call_b.await.unwrap().unwrap();
    eventually("every lease released", Duration::from_secs(5), || {
        leases(&redis, &a).is_empty()
    })
    .await;
}

/// Polls `fut` `n` times, letting Redis answer in between, then drops it;
/// true if it finished first.
async fn poll_then_drop(fut: impl Future, n: usize) -> bool {
    let mut fut: Pin<Box<_>> = Box::pin(fut);
    for _ in 0..n {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if polled.is_ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[tokio::test]
async fn a_future_dropped_at_any_await_point_leaks_no_permit() {
    let Some(redis) = RedisServer::start_or_skip("a_future_dropped_at_any_await_point") else {
        return;
    };
    let counter = Counter::default();
    let held = store(&redis.url()).await;
    let x = store(&redis.url())
        .await
        .retry_interval(Duration::from_millis(10));
    let svc_held = bulkhead(held.clone(), 1, None, OnStoreError::FailClosed, &counter);
    let svc_x = bulkhead(
        x.clone(),
        1,
        queue(4, Duration::from_secs(5)),
        OnStoreError::FailClosed,
        &counter,
    );
    // Two ways to wait: in Redis (another instance holds the lease), and in
    // this process's queue (a call of this instance holds it). Either holder
    // lets go after the fifth poll; the future is dropped after `n` polls,
    // for every `n` until it finishes by itself.
    for holder in [&svc_held, &svc_x] {
        let mut n = 0;
        loop {
            let (release, rx) = oneshot::channel();
            let entered = counter.entered();
            let holding = tokio::spawn(holder.clone().oneshot(Hold::Until(rx)));
            eventually("the holder holds", Duration::from_secs(5), || {
                counter.entered() == entered + 1
            })
            .await;
            let mut release = Some(release);
            let mut polls = 0;
            let call = svc_x.clone().oneshot(Hold::For(Duration::ZERO));
            let finished = poll_then_drop(
                std::future::poll_fn({
                    let mut call = Box::pin(call);
                    move |cx| {
                        polls += 1;
                        if polls == 5
                            && let Some(release) = release.take()
                        {
                            let _ = release.send(());
                        }
                        call.as_mut().poll(cx)
                    }
                }),
                n,
            )
            .await;
            // Released now if the call was dropped before the fifth poll.
            holding.await.ok();
            eventually(
                &format!("no lease left after {n} polls"),
                Duration::from_secs(5),
                || leases(&redis, &x).is_empty(),
            )
            .await;
            assert_eq!((x.in_flight(KEY), x.queued(KEY)), (0, 0), "{n} polls");
            assert_eq!(held.in_flight(KEY), 0, "{n} polls");
            if finished {
                break;
            }
            n += 1;
            assert!(n < 1_000, "the call never finished");
        }
        assert!(n > 5, "the call waited: {n} polls");
    }
}

#[tokio::test]
async fn a_dead_or_paused_redis_fails_closed_or_open_as_asked() {
    let Some(mut redis) = RedisServer::start_or_skip("a_dead_or_paused_redis_fails") else {
        return;
    };
    let counter = Counter::default();
    let store = RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .timeout(Duration::from_millis(200));
    let closed = bulkhead(store.clone(), 2, None, OnStoreError::FailClosed, &counter);
    let open = bulkhead(store.clone(), 2, None, OnStoreError::FailOpen, &counter);
    let call = |svc: &Svc| svc.clone().oneshot(Hold::For(Duration::ZERO));
    call(&closed).await.unwrap();

    redis.pause();
    let paused = call(&closed).await;
    assert!(
        matches!(paused, Err(Error::Store(StoreError::Timeout(_)))),
        "{paused:?}"
    );
    let entered = counter.entered();
    call(&open).await.unwrap();
    assert_eq!(counter.entered(), entered + 1, "failed open: let through");
    redis.resume();
    // Every lease a timed-out call may have taken was given back.
    call(&closed).await.unwrap();

    redis.kill();
    let dead = call(&closed).await;
    assert!(matches!(dead, Err(Error::Store(_))), "{dead:?}");
    let entered = counter.entered();
    call(&open).await.unwrap();
    assert_eq!(counter.entered(), entered + 1, "failed open: let through");
    assert_eq!(store.in_flight(KEY), 0);
}

/// Failing open lets requests through without Redis, but not without the
/// instance's own limit: a dead Redis does not unleash the downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_still_keeps_each_instance_within_the_limit() {
    let Some(mut redis) = RedisServer::start_or_skip("failing_open_still_keeps") else {
        return;
    };
    let store = RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .timeout(Duration::from_millis(200));
    let counter = Counter::default();
    let open = bulkhead(store.clone(), 2, None, OnStoreError::FailOpen, &counter);
    redis.kill();
    let mut release = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = oneshot::channel();
        release.push(tx);
        calls.push(tokio::spawn(open.clone().oneshot(Hold::Until(rx))));
    }
    while counter.entered() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two let through, failed open; the third finds no local permit.
    let third = open.clone().oneshot(Hold::For(Duration::ZERO)).await;
    assert!(
        matches!(third, Err(Error::Shed(ref shed)) if shed.reason == Reason::Full),
        "{third:?}"
    );
    assert_eq!(counter.most(), 2);
    drop(release);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(store.in_flight(KEY), 0, "the local permits came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_limit_holds_in_the_slot_of_the_hash_tag() {
    let Some(mut cluster) = RedisCluster::start_or_skip("on_a_cluster_the_limit_holds") else {
        return;
    };
    let connect = || async {
        RedisStore::connect_cluster(&cluster.urls())
            .await
            .unwrap()
            .timeout(Duration::from_secs(5))
    };
    let (a, b) = (connect().await, connect().await);
    let counter = Counter::default();
    let svc_a = bulkhead(a.clone(), 3, None, OnStoreError::FailClosed, &counter);
    let svc_b = bulkhead(b, 3, None, OnStoreError::FailClosed, &counter);

    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for svc in [&svc_a, &svc_b, &svc_a] {
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        calls.push(tokio::spawn(svc.clone().oneshot(Hold::Until(rx))));
        let entered = calls.len();
        eventually("the call holds", Duration::from_secs(5), || {
            counter.entered() == entered
        })
        .await;
    }
    for svc in [&svc_a, &svc_b] {
        let refused = svc.clone().oneshot(Hold::For(Duration::ZERO)).await;
        assert!(is_shed(&refused, Reason::Full), "{refused:?}");
    }

    let key = a.key(KEY);
    assert_eq!(key, format!("palisade:bulkhead:{{{KEY}}}"));
    assert_eq!(cluster.key_slot(&key), cluster.key_slot(KEY));
    assert_eq!(cluster.node_for_key(&key).cli(&["ZCARD", &key]), "3");

    for tx in senders {
        tx.send(()).unwrap();
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let node = cluster.node_for_key(&key);
    eventually("every lease released", Duration::from_secs(5), || {
        node.cli(&["ZCARD", &key]) == "0"
    })
    .await;
}

#[cfg(feature = "metrics")]
#[test]
fn round_trips_are_timed_and_failures_counted_under_the_bulkhead_label() {
    let Some(redis) = RedisServer::start_or_skip("round_trips_are_timed") else {
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
            let store = RedisStore::connect(&redis.url())
                .await
                .unwrap()
                .timeout(Duration::from_millis(200));
            let svc = bulkhead(
                store.clone(),
                1,
                None,
                OnStoreError::FailClosed,
                &Counter::default(),
            );
            svc.clone()
                .oneshot(Hold::For(Duration::ZERO))
                .await
                .unwrap();
            eventually("the lease released", Duration::from_secs(5), || {
                leases(&redis, &store).is_empty()
            })
            .await;
            redis.pause();
            let failed = svc.oneshot(Hold::For(Duration::ZERO)).await;
            redis.resume();
            assert!(matches!(failed, Err(Error::Store(_))), "{failed:?}");
        });
    });
    let samples = crate::support::metric_samples(&snapshotter, "palisade_store_");
    let labels = |op| format!("{{layer=\"bulkhead\",store=\"redis\",op=\"{op}\"}}");
    let duration = |op| samples.get(&format!("palisade_store_duration_seconds{}", labels(op)));
    let errors = |op| samples.get(&format!("palisade_store_errors_total{}", labels(op)));
    assert_eq!(duration("acquire"), Some(&2.0), "{samples:?}");
    assert_eq!(errors("acquire"), Some(&1.0), "{samples:?}");
    assert!(
        duration("release").is_some_and(|n| *n >= 1.0),
        "{samples:?}"
    );
}

/// `Queue::new` accepts `Duration::MAX` (the local gate then waits without
/// bound); the fleet stage must wait too, not refuse `Full` as if there
/// were no queue at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_an_unbounded_wait_waits_for_the_fleet_instead_of_refusing_full() {
    let Some(redis) = RedisServer::start_or_skip("a_queue_with_an_unbounded_wait") else {
        return;
    };
    let counter = Counter::default();
    let a = store(&redis.url())
        .await
        .retry_interval(Duration::from_millis(10));
    let b = store(&redis.url()).await;
    let svc_a = bulkhead(
        a,
        1,
        queue(4, Duration::MAX),
        OnStoreError::FailClosed,
        &counter,
    );
    let svc_b = bulkhead(b, 1, None, OnStoreError::FailClosed, &counter);
    let (done, rx) = oneshot::channel();
    let held = tokio::spawn(svc_b.oneshot(Hold::Until(rx)));
    eventually(
        "B holds the fleet's only lease",
        Duration::from_secs(5),
        || counter.entered() == 1,
    )
    .await;
    let waiting = tokio::spawn(svc_a.oneshot(Hold::For(Duration::ZERO)));
    // A few retries' worth: still waiting, not refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "refused instead of waiting: {:?}",
        waiting.await.unwrap()
    );
    done.send(()).unwrap();
    held.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once B gave its lease back")
        .unwrap()
        .unwrap();
    assert_eq!(counter.entered(), 2);
}

/// `lease` takes any `Duration`: a very long one (a lease that should in
/// practice never expire) must still be taken, not fail every acquisition
/// with a script error.
#[tokio::test]
async fn a_very_long_lease_is_still_taken() {
    let Some(redis) = RedisServer::start_or_skip("a_very_long_lease_is_still_taken") else {
        return;
    };
    let counter = Counter::default();
    let store = store(&redis.url()).await.lease(Duration::MAX);
    let svc = bulkhead(store.clone(), 1, None, OnStoreError::FailClosed, &counter);
    let result = svc.oneshot(Hold::For(Duration::ZERO)).await;
    assert!(result.is_ok(), "{result:?}");
    eventually("the lease released", Duration::from_secs(5), || {
        leases(&redis, &store).is_empty()
    })
    .await;
}

/// Clones of one store share its renewer, but each may set its own lease.
/// A short lease taken while the renewer sleeps for a long one's third must
/// still be renewed in time, or the fleet runs more than its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_taken_while_a_long_one_is_held_is_renewed_in_time() {
    let Some(redis) = RedisServer::start_or_skip("a_short_lease_taken_while_a_long") else {
        return;
    };
    let counter = Counter::default();
    let long = store(&redis.url()).await.lease(Duration::from_secs(60));
    let short = long.clone().lease(Duration::from_millis(900));
    let other = store(&redis.url()).await;
    // The long lease, under another namespace, starts the renewer: it sleeps
    // 20 s.
    let long_counter = Counter::default();
    let long_svc = {
        let layer = BulkheadLayer::with_store(long, NonZeroU32::new(1).unwrap()).namespace("long");
        let counter = long_counter.clone();
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |rx: oneshot::Receiver<()>| {
                let counter = counter.clone();
                async move {
                    counter.entered.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.await;
                    Ok::<_, Infallible>(())
                }
            }))
    };
    let (long_done, long_rx) = oneshot::channel();
    let long_call = tokio::spawn(long_svc.oneshot(long_rx));
    eventually("the long lease is held", Duration::from_secs(5), || {
        long_counter.entered() == 1
    })
    .await;
    let svc_short = bulkhead(short, 1, None, OnStoreError::FailClosed, &counter);
    let svc_other = bulkhead(other, 1, None, OnStoreError::FailClosed, &counter);
    let (done, rx) = oneshot::channel();
    let call = tokio::spawn(svc_short.oneshot(Hold::Until(rx)));
    eventually("the short lease is held", Duration::from_secs(5), || {
        counter.entered() == 1
    })
    .await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_700) {
        let refused = svc_other.clone().oneshot(Hold::For(Duration::ZERO)).await;
        assert!(
            is_shed(&refused, Reason::Full),
            "after {:?}, another instance got in: {refused:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counter.most(), 1);
    done.send(()).unwrap();
    call.await.unwrap().unwrap();
    long_done.send(()).unwrap();
    long_call.await.unwrap().unwrap();
}

/// A bulkhead of `limit` over `store` (no queue) and its handle.
fn bulkhead_with_handle(
    store: RedisStore,
    limit: u32,
    counter: &Counter,
) -> (Svc, palisade::bulkhead::Handle<RedisStore>) {
    let layer =
        BulkheadLayer::with_store(store, NonZeroU32::new(limit).unwrap()).namespace("partner");
    let handle = layer.handle();
    let counter = counter.clone();
    let downstream = service_fn(move |hold: Hold| {
        let counter = counter.clone();
        async move {
            counter.now.fetch_add(1, Ordering::SeqCst);
            if let Hold::Until(rx) = hold {
                let _ = rx.await;
            }
            counter.now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(())
        }
    });
    let svc = BoxCloneSyncService::new(ServiceBuilder::new().layer(layer).service(downstream));
    (svc, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_limit_applies_to_the_fleet_from_the_next_lease_and_cancels_no_call() {
    let Some(redis) = RedisServer::start_or_skip("a_changed_limit_applies_to_the_fleet") else {
        return;
    };
    let counter = Counter::default();
    let (a, a_limit) = bulkhead_with_handle(store(&redis.url()).await, 1, &counter);
    let (b, b_limit) = bulkhead_with_handle(store(&redis.url()).await, 1, &counter);
    let hold = |svc: &Svc| {
        let (release, rx) = oneshot::channel();
        (release, tokio::spawn(svc.clone().oneshot(Hold::Until(rx))))
    };
    let now = || counter.now.load(Ordering::SeqCst);
    let within = Duration::from_secs(10);

    let first = hold(&a);
    eventually("a holds the fleet's one lease", within, || now() == 1).await;
    let refused = b.clone().oneshot(Hold::For(Duration::ZERO)).await;
    assert!(is_shed(&refused, Reason::Full), "{refused:?}");

    // Raised on every instance: b's next lease request carries 2.
    a_limit.set_max_in_flight(NonZeroU32::new(2).unwrap());
    b_limit.set_max_in_flight(NonZeroU32::new(2).unwrap());
    let second = hold(&b);
    eventually("b gets a second lease", within, || now() == 2).await;
    assert_eq!(leases(&redis, &store(&redis.url()).await).len(), 2);

    // Lowered with two running: neither is cancelled, and no third gets in
    // until both have ended.
    a_limit.set_max_in_flight(NonZeroU32::new(1).unwrap());
    b_limit.set_max_in_flight(NonZeroU32::new(1).unwrap());
    let refused = a.clone().oneshot(Hold::For(Duration::ZERO)).await;
    assert!(is_shed(&refused, Reason::Full), "{refused:?}");
    assert_eq!(now(), 2, "no running call is cancelled");
    let _ = first.0.send(());
    first.1.await.unwrap().unwrap();
    let refused = b.clone().oneshot(Hold::For(Duration::ZERO)).await;
    assert!(
        is_shed(&refused, Reason::Full),
        "one lease is held, the new limit is 1: {refused:?}"
    );
    let _ = second.0.send(());
    second.1.await.unwrap().unwrap();
    let started = Instant::now();
    // The lease goes back by a round trip after the call: poll for it.
    loop {
        match a.clone().oneshot(Hold::For(Duration::ZERO)).await {
            Ok(()) => break,
            Err(Error::Shed(_)) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("the one lease never freed: {other:?}"),
        }
    }
}
