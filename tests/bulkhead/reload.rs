//! Changing the limit at run time through the layer's handle: a higher
//! limit lets waiters in at once, a lower one cancels nothing and retires
//! permits as calls end, every clone and service of the layer follows, and
//! concurrent changes leak no permit.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade::bulkhead::{BulkheadLayer, Error, MemoryStore};
use palisade::key::Global;
use palisade::load_shed::{Queue, Reason};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::nz;

/// A call: the key it counts under, and the signal that ends it.
struct Call {
    key: &'static str,
    release: oneshot::Receiver<()>,
}

/// The downstream's view: calls running now, and calls dropped before they
/// were told to end (cancelled).
#[derive(Clone, Default)]
struct Downstream {
    running: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

impl Downstream {
    fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// A running call; counts itself cancelled if dropped before its end.
struct Running {
    downstream: Downstream,
    ended: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.downstream.running.fetch_sub(1, Ordering::SeqCst);
        if !self.ended {
            self.downstream.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Inner = tower::util::BoxCloneSyncService<Call, (), Infallible>;

/// A downstream whose calls run until released (or their sender is
/// dropped), yielding a few times on the way.
fn downstream(d: &Downstream) -> Inner {
    let d = d.clone();
    Inner::new(service_fn(move |call: Call| {
        d.running.fetch_add(1, Ordering::SeqCst);
        let mut running = Running {
            downstream: d.clone(),
            ended: false,
        };
        async move {
            let _ = call.release.await;
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            running.ended = true;
            drop(running);
            Ok(())
        }
    }))
}

type Outcome = JoinHandle<Result<(), Error<Infallible>>>;

/// Sends a call for `key` and lets it reach the bulkhead (admitted, queued
/// or refused) on the current-thread runtime; returns what ends it and its
/// task.
async fn send<S>(svc: &S, key: &'static str) -> (oneshot::Sender<()>, Outcome)
where
    S: Service<Call, Response = (), Error = Error<Infallible>> + Clone + Send + 'static,
    S::Future: Send,
{
    let (release, receiver) = oneshot::channel();
    let task = tokio::spawn(svc.clone().oneshot(Call {
        key,
        release: receiver,
    }));
    settle().await;
    (release, task)
}

async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Ends a call and returns how it ended.
async fn end((release, task): (oneshot::Sender<()>, Outcome)) -> Result<(), Error<Infallible>> {
    let _ = release.send(());
    task.await.expect("the call's task")
}

fn long_queue() -> Queue {
    Queue::new(64, Duration::from_secs(3_600)).expect("a valid queue")
}

fn keyed(call: &Call) -> Option<String> {
    Some(call.key.to_owned())
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_lets_waiters_in_at_once() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(1)).queue(long_queue());
    let handle = layer.handle();
    let store = layer.store().clone();
    let svc = layer.layer(downstream(&d));

    let holder = send(&svc, "").await;
    let waiters = [send(&svc, "").await, send(&svc, "").await];
    assert_eq!((d.running(), store.queued(Global::KEY)), (1, 2));

    handle.set_max_in_flight(nz(3));
    settle().await;
    assert_eq!(handle.max_in_flight(), nz(3));
    assert_eq!(
        (d.running(), store.queued(Global::KEY)),
        (3, 0),
        "both waiters run while the first call still holds its permit"
    );

    end(holder).await.unwrap();
    for waiter in waiters {
        end(waiter).await.unwrap();
    }
    assert_eq!(store.in_flight(Global::KEY), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_made_before_a_change_and_first_polled_after_it_takes_the_new_limit() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(1)).queue(long_queue());
    let handle = layer.handle();
    let mut svc = layer.layer(downstream(&d));

    let holder = send(&svc, "").await;
    // Made while the one permit is held: it will wait, under limit 1.
    let (release, receiver) = oneshot::channel();
    svc.ready().await.unwrap();
    let late = svc.call(Call {
        key: "",
        release: receiver,
    });
    handle.set_max_in_flight(nz(3));
    let late = (release, tokio::spawn(late));
    settle().await;
    assert_eq!(d.running(), 2, "the late call runs under the new limit");
    let third = send(&svc, "").await;
    assert_eq!(d.running(), 3, "and left the key at the new limit");

    for call in [holder, late, third] {
        end(call).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_lowered_limit_cancels_no_call_and_retires_permits_as_calls_end() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(4)).queue(long_queue());
    let handle = layer.handle();
    let store = layer.store().clone();
    let svc = layer.layer(downstream(&d));
    let state = || (d.running(), store.queued(Global::KEY));

    let mut old = Vec::new();
    for _ in 0..4 {
        old.push(send(&svc, "").await);
    }
    assert_eq!(state(), (4, 0));

    handle.set_max_in_flight(nz(2));
    settle().await;
    assert_eq!(state(), (4, 0), "no running call is cancelled");
    assert_eq!(d.cancelled(), 0);

    // New calls wait until fewer than 2 run.
    let mut new = Vec::new();
    for _ in 0..4 {
        new.push(send(&svc, "").await);
    }
    assert_eq!(state(), (4, 4));
    let mut old = old.into_iter();
    end(old.next().unwrap()).await.unwrap();
    settle().await;
    assert_eq!(state(), (3, 4), "3 still run: nobody is let in");
    end(old.next().unwrap()).await.unwrap();
    settle().await;
    assert_eq!(state(), (2, 4), "2 run: still nobody is let in");
    end(old.next().unwrap()).await.unwrap();
    settle().await;
    assert_eq!(
        state(),
        (2, 3),
        "one of the old calls ended under the limit"
    );
    end(old.next().unwrap()).await.unwrap();
    settle().await;
    assert_eq!(state(), (2, 2), "exactly the new limit run at once");
    assert_eq!(store.in_flight(Global::KEY), 2);

    for call in new {
        end(call).await.unwrap();
        settle().await;
        assert!(d.running() <= 2, "{} run over the limit of 2", d.running());
    }
    assert_eq!(state(), (0, 0));
    assert_eq!(d.cancelled(), 0);
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_the_layer_all_follow_the_handle() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(1)).per(keyed).namespace("ns");
    let store = layer.store().clone();
    let built_before = layer.layer(downstream(&d));
    let clone_of_built = built_before.clone();
    let layer_clone = layer.clone();
    // A handle from a clone steers the original too.
    layer_clone.handle().set_max_in_flight(nz(2));
    let built_after = layer_clone.layer(downstream(&d));
    assert_eq!(layer.max_in_flight(), nz(2));

    // Each service admits exactly 2 of a new key at once, and refuses a
    // third (no queue).
    let services = [
        ("a", built_before.clone()),
        ("b", clone_of_built),
        ("c", built_after),
    ];
    let mut held = Vec::new();
    for (key, svc) in &services {
        held.push(send(svc, key).await);
        held.push(send(svc, key).await);
        let refused = end(send(svc, key).await).await;
        assert!(
            matches!(refused, Err(Error::Shed(ref shed)) if shed.reason == Reason::Full),
            "key {key}: {refused:?}"
        );
        assert_eq!(store.in_flight(&format!("ns:{key}")), 2, "key {key}");
    }
    // A service built before the change, asked for a key whose gate is now
    // at the new limit, keeps it there.
    let refused = end(send(&built_before, "a").await).await;
    assert!(matches!(refused, Err(Error::Shed(_))), "{refused:?}");
    for call in held {
        end(call).await.unwrap();
    }
    assert_eq!(d.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_lets_the_waiters_of_every_key_of_its_namespace_in_only() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(1))
        .per(keyed)
        .queue(long_queue())
        .namespace("ns");
    let handle = layer.handle();
    let store: MemoryStore = layer.store().clone();
    // Another bulkhead in the same store, another namespace.
    let other = BulkheadLayer::with_store(store.clone(), nz(1))
        .per(keyed)
        .queue(long_queue())
        .namespace("other");
    let svc = layer.layer(downstream(&d));
    let other_svc = other.layer(downstream(&d));

    let mut calls = Vec::new();
    for key in ["a", "b"] {
        for _ in 0..3 {
            calls.push(send(&svc, key).await);
        }
    }
    for _ in 0..2 {
        calls.push(send(&other_svc, "a").await);
    }
    let queued = |key: &str| (store.in_flight(key), store.queued(key));
    assert_eq!(queued("ns:a"), (1, 2));
    assert_eq!(queued("ns:b"), (1, 2));
    assert_eq!(queued("other:a"), (1, 1));

    handle.set_max_in_flight(nz(3));
    settle().await;
    assert_eq!(queued("ns:a"), (3, 0));
    assert_eq!(queued("ns:b"), (3, 0));
    assert_eq!(
        queued("other:a"),
        (1, 1),
        "another namespace keeps its limit"
    );

    for call in calls {
        end(call).await.unwrap();
    }
    assert_eq!(d.running(), 0);
}

/// On two threads, limits change while calls come and go: no panic, no
/// call fails, no permit leaks, and afterwards exactly the last limit run
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_and_calls_leak_no_permit() {
    let d = Downstream::default();
    let layer = BulkheadLayer::new(nz(4))
        .queue(Queue::new(10_000, Duration::from_secs(60)).expect("a valid queue"));
    let handle = layer.handle();
    let store = layer.store().clone();
    let svc = layer.layer(downstream(&d));

    let callers = (0..8)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    // Released at once: the call still yields a few times.
                    let (release, receiver) = oneshot::channel();
                    drop(release);
                    let call = Call {
                        key: "",
                        release: receiver,
                    };
                    svc.clone().oneshot(call).await.expect("no call fails");
                }
            })
        })
        .collect::<Vec<_>>();
    let changer = {
        let handle = handle.clone();
        tokio::spawn(async move {
            for i in 0..2_000u32 {
                handle.set_max_in_flight(nz(i % 6 + 1));
                tokio::task::yield_now().await;
            }
        })
    };
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    changer.await.expect("the changer panicked");
    assert_eq!(store.in_flight(Global::KEY), 0, "a permit leaked");
    assert_eq!(store.queued(Global::KEY), 0);
    assert_eq!(d.cancelled(), 0);

    handle.set_max_in_flight(nz(3));
    let mut held = Vec::new();
    for _ in 0..4 {
        let (release, receiver) = oneshot::channel();
        let call = Call {
            key: "",
            release: receiver,
        };
        held.push((release, tokio::spawn(svc.clone().oneshot(call))));
    }
    // Other threads run the calls: wait (bounded) for them to settle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (store.in_flight(Global::KEY), store.queued(Global::KEY)) != (3, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} in flight and {} queued, expected 3 and 1",
            store.in_flight(Global::KEY),
            store.queued(Global::KEY)
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(d.running(), 3);
    // Which 3 run is the threads' choice: release all, then await all.
    let tasks = held
        .into_iter()
        .map(|(release, task)| {
            let _ = release.send(());
            task
        })
        .collect::<Vec<_>>();
    for task in tasks {
        task.await.expect("the call's task").expect("no call fails");
    }
    assert_eq!(store.in_flight(Global::KEY), 0);
}
