//! The wait queue: its bounds, priority order, FIFO and adaptive LIFO with
//! CoDel, in paused time.

use std::convert::Infallible;
use std::time::Duration;

use futures::future::BoxFuture;
use palisade::bulkhead::{Bulkhead, BulkheadLayer, Error, MemoryStore};
use palisade::key::Global;
use palisade::load_shed::{CoDel, Priority, Queue, QueueOrder, Reason, Shed};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

use crate::nz;

/// A request: its priority, its name, and when the service answers it.
struct Job {
    priority: Priority,
    name: &'static str,
    hold: Duration,
}

fn job(priority: Priority, name: &'static str, hold_ms: u64) -> Job {
    Job {
        priority,
        name,
        hold: Duration::from_millis(hold_ms),
    }
}

type Svc = Bulkhead<
    tower::util::BoxCloneService<Job, &'static str, Infallible>,
    MemoryStore,
    Global,
    fn(&Job) -> Priority,
>;

fn bulkhead(limit: u32, queue: Option<Queue>) -> Svc {
    let inner = tower::util::BoxCloneService::new(service_fn(|job: Job| async move {
        tokio::time::sleep(job.hold).await;
        Ok::<_, Infallible>(job.name)
    }));
    let mut layer =
        BulkheadLayer::new(nz(limit)).priority((|job: &Job| job.priority) as fn(&Job) -> Priority);
    if let Some(queue) = queue {
        layer = layer.queue(queue);
    }
    layer.layer(inner)
}

/// Sends `job` and returns its task; the job is queued or running when this
/// returns.
async fn send(svc: &Svc, job: Job) -> JoinHandle<Result<&'static str, Error<Infallible>>> {
    let task = tokio::spawn(svc.clone().oneshot(job));
    // Let it reach the gate (admitted or queued).
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    task
}

fn shed(result: Result<&'static str, Error<Infallible>>) -> Shed {
    match result {
        Err(Error::Shed(shed)) => shed,
        other => panic!("expected a shed request, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_waits_exactly_its_max_wait_then_is_refused() {
    let queue = Queue::new(4, Duration::from_millis(50)).unwrap();
    let svc = bulkhead(1, Some(queue));
    let holder = send(&svc, job(Priority::Normal, "holder", 1_000)).await;
    let start = Instant::now();
    let waiter = send(&svc, job(Priority::Normal, "waiter", 1)).await;
    let refused = shed(waiter.await.unwrap());
    assert_eq!(refused.reason, Reason::Waited);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(holder.await.unwrap().unwrap(), "holder");
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_a_saturated_bulkhead_refuses_at_once() {
    let svc = bulkhead(2, None);
    let a = send(&svc, job(Priority::Normal, "a", 100)).await;
    let b = send(&svc, job(Priority::Normal, "b", 100)).await;
    let start = Instant::now();
    let refused = shed(svc.clone().oneshot(job(Priority::Critical, "c", 1)).await);
    assert_eq!(refused.reason, Reason::Full);
    assert_eq!(refused.priority, Priority::Critical);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(a.await.unwrap().unwrap(), "a");
    assert_eq!(b.await.unwrap().unwrap(), "b");
    // The permits came back.
    assert_eq!(
        svc.clone()
            .oneshot(job(Priority::Normal, "d", 1))
            .await
            .unwrap(),
        "d"
    );
}

#[tokio::test(start_paused = true)]
async fn the_lowest_class_is_shed_first_and_the_highest_served_first() {
    let queue = Queue::new(2, Duration::from_secs(10)).unwrap();
    let svc = bulkhead(1, Some(queue));
    let holder = send(&svc, job(Priority::Normal, "holder", 100)).await;
    let sheddable = send(&svc, job(Priority::Sheddable, "sheddable", 10)).await;
    let normal = send(&svc, job(Priority::Normal, "normal", 10)).await;
    // The queue is full: a critical request takes the sheddable one's place.
    let critical = send(&svc, job(Priority::Critical, "critical", 10)).await;
    assert_eq!(shed(sheddable.await.unwrap()).reason, Reason::Displaced);
    // Nothing below sheddable: a new sheddable request is the one refused.
    let late = svc
        .clone()
        .oneshot(job(Priority::Sheddable, "late", 1))
        .await;
    assert_eq!(shed(late).reason, Reason::Full);
    // A normal request displaces nothing of its own class.
    let late = svc.clone().oneshot(job(Priority::Normal, "late", 1)).await;
    assert_eq!(shed(late).reason, Reason::Full);

    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = |task: JoinHandle<Result<&'static str, Error<Infallible>>>| {
        let order = order.clone();
        tokio::spawn(async move {
            let name = task.await.unwrap().unwrap();
            order.lock().unwrap().push((name, Instant::now()));
        })
    };
    let t0 = Instant::now();
    let (a, b, c) = (record(holder), record(normal), record(critical));
    let _ = tokio::join!(a, b, c);
    let order = order.lock().unwrap();
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["holder", "critical", "normal"]);
    // One at a time: holder at 100 ms, then 10 ms each.
    assert_eq!(order[2].1 - t0, Duration::from_millis(120));
}

#[tokio::test(start_paused = true)]
async fn never_shed_passes_a_saturated_bulkhead_uncounted() {
    let svc = bulkhead(1, None);
    let holder = send(&svc, job(Priority::Normal, "holder", 100)).await;
    let health = svc
        .clone()
        .oneshot(job(Priority::NeverShed, "health", 1))
        .await;
    assert_eq!(health.unwrap(), "health");
    assert_eq!(
        shed(svc.clone().oneshot(job(Priority::Normal, "x", 1)).await).reason,
        Reason::Full
    );
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn fifo_serves_the_oldest_first() {
    let queue = Queue::new(8, Duration::from_secs(10)).unwrap();
    let svc = bulkhead(1, Some(queue));
    let holder = send(&svc, job(Priority::Normal, "holder", 10)).await;
    let first = send(&svc, job(Priority::Normal, "first", 10)).await;
    let second = send(&svc, job(Priority::Normal, "second", 10)).await;
    holder.await.unwrap().unwrap();
    let start = Instant::now();
    first.await.unwrap().unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(10),
        "first served first"
    );
    second.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

/// "Fail at Scale": once the queue has stood for an interval, the stale
/// waiters are shed when a permit frees and the newest is served.
#[tokio::test(start_paused = true)]
async fn adaptive_lifo_sheds_the_stale_and_serves_the_newest_once_the_queue_stands() {
    let codel = CoDel::new(Duration::from_millis(5), Duration::from_millis(100)).unwrap();
    let queue = Queue::new(16, Duration::from_secs(10))
        .unwrap()
        .order(QueueOrder::AdaptiveLifo(codel));
    let svc = bulkhead(1, Some(queue));
    let holder = send(&svc, job(Priority::Normal, "holder", 150)).await;
    let old = send(&svc, job(Priority::Normal, "old", 10)).await;
    tokio::time::advance(Duration::from_millis(146)).await;
    // Queued 2 ms before the holder ends: within the target.
    let fresh = send(&svc, job(Priority::Normal, "fresh", 10)).await;
    let fresher = send(&svc, job(Priority::Normal, "fresher", 10)).await;
    let start = Instant::now();
    holder.await.unwrap().unwrap();
    // The queue stood 150 ms > 100 ms: `old` (150 ms) is stale and shed at once.
    assert_eq!(shed(old.await.unwrap()).reason, Reason::Stale);
    assert!(start.elapsed() <= Duration::from_millis(5));
    // Newest first.
    assert_eq!(fresher.await.unwrap().unwrap(), "fresher");
    // The queue still stands: `fresh` has now waited 14 ms, past the target.
    assert_eq!(shed(fresh.await.unwrap()).reason, Reason::Stale);
    assert_eq!(
        svc.clone()
            .oneshot(job(Priority::Normal, "next", 1))
            .await
            .unwrap(),
        "next"
    );
}

/// While the queue keeps emptying, adaptive LIFO is FIFO and sheds nobody
/// waiting less than the interval.
#[tokio::test(start_paused = true)]
async fn adaptive_lifo_is_fifo_while_the_queue_drains() {
    let queue = Queue::new(16, Duration::from_secs(10))
        .unwrap()
        .order(QueueOrder::AdaptiveLifo(CoDel::default()));
    let svc = bulkhead(1, Some(queue));
    let holder = send(&svc, job(Priority::Normal, "holder", 50)).await;
    let first = send(&svc, job(Priority::Normal, "first", 10)).await;
    let second = send(&svc, job(Priority::Normal, "second", 10)).await;
    holder.await.unwrap().unwrap();
    let start = Instant::now();
    assert_eq!(first.await.unwrap().unwrap(), "first");
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert_eq!(second.await.unwrap().unwrap(), "second");
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_permits() {
    let layer = BulkheadLayer::new(nz(1)).per(|req: &(&'static str, u64)| Some(req.0.to_owned()));
    let store = layer.store().clone();
    let svc = layer.layer(service_fn(|(name, ms): (&'static str, u64)| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(name)
    }));
    let slow: BoxFuture<'static, _> = Box::pin(svc.clone().oneshot(("recommendations", 1_000)));
    let slow = tokio::spawn(slow);
    tokio::task::yield_now().await;
    assert_eq!(store.in_flight("recommendations"), 1);
    // The saturated key refuses; another key is untouched.
    assert!(matches!(
        svc.clone().oneshot(("recommendations", 1)).await,
        Err(Error::Shed(_))
    ));
    assert_eq!(svc.clone().oneshot(("orders", 1)).await.unwrap(), "orders");
    slow.await.unwrap().unwrap();
    assert_eq!(store.in_flight("recommendations"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_keys_stays_within_max_keys_and_frees_no_busy_permit() {
    let store = MemoryStore::with_max_keys(std::num::NonZeroUsize::new(100).unwrap());
    let layer = BulkheadLayer::with_store(store.clone(), nz(1))
        .per(|req: &(String, u64)| Some(req.0.clone()));
    let svc = layer.layer(service_fn(|(_, ms): (String, u64)| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(())
    }));
    let busy = tokio::spawn(svc.clone().oneshot(("busy".to_owned(), 1_000)));
    tokio::task::yield_now().await;
    for i in 0..10_000 {
        svc.clone()
            .oneshot((format!("flood-{i}"), 0))
            .await
            .unwrap();
        assert!(store.len() <= 100);
    }
    assert!(
        matches!(
            svc.clone().oneshot(("busy".to_owned(), 0)).await,
            Err(Error::Shed(_))
        ),
        "the busy key kept its permit through the flood"
    );
    busy.await.unwrap().unwrap();
}
