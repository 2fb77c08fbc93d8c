//! A caller can hang up at any await point: no permit and no queue place
//! is ever lost.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker_ref;
use palisade::bulkhead::{BulkheadLayer, MemoryStore};
use palisade::load_shed::{Queue, QueueOrder};
use tower::{Layer, ServiceExt, service_fn};

use crate::nz;

fn layer(store: &MemoryStore, order: QueueOrder) -> BulkheadLayer {
    BulkheadLayer::with_store(store.clone(), nz(1)).queue(
        Queue::new(4, Duration::from_millis(20))
            .unwrap()
            .order(order),
    )
}

/// An inner service with several await points of its own.
async fn work(ms: u64) -> Result<u64, Infallible> {
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// Polls `future` `polls` times, a millisecond apart, then drops it;
/// true if it finished first.
async fn poll_then_drop<F: Future>(future: F, polls: usize) -> bool {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(noop_waker_ref());
    for _ in 0..polls {
        if let Poll::Ready(_) = future.as_mut().poll(&mut cx) {
            return true;
        }
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn dropping_an_admitted_call_at_every_await_point_releases_its_permit() {
    for order in [
        QueueOrder::Fifo,
        QueueOrder::AdaptiveLifo(Default::default()),
    ] {
        let store = MemoryStore::new();
        let svc = layer(&store, order).layer(service_fn(work));
        let mut finished = false;
        for polls in 0..12 {
            finished = poll_then_drop(svc.clone().oneshot(3), polls).await;
            assert_eq!(store.in_flight("global"), 0, "after {polls} polls");
            assert_eq!(store.queued("global"), 0, "after {polls} polls");
            // The permit is usable again, right away.
            assert_eq!(svc.clone().oneshot(0).await.unwrap(), 0);
        }
        assert!(finished, "the last round ran to the end");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_at_every_await_point_leaves_no_trace() {
    for order in [
        QueueOrder::Fifo,
        QueueOrder::AdaptiveLifo(Default::default()),
    ] {
        for polls in 0..30 {
            let store = MemoryStore::new();
            let svc = layer(&store, order).layer(service_fn(work));
            // The holder ends after 10 ms: a waiter polled long enough is
            // granted the permit and then dropped holding it, or mid-call.
            let holder = tokio::spawn(svc.clone().oneshot(5));
            tokio::task::yield_now().await;
            assert_eq!(store.in_flight("global"), 1);
            poll_then_drop(svc.clone().oneshot(3), polls).await;
            holder.await.unwrap().unwrap();
            assert_eq!(store.in_flight("global"), 0, "after {polls} polls");
            assert_eq!(store.queued("global"), 0, "after {polls} polls");
            assert_eq!(svc.clone().oneshot(0).await.unwrap(), 0);
        }
    }
}

/// A permit granted to a waiter that is dropped before it ever runs again
/// goes to the next waiter, not nowhere.
#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_dropped_waiter_goes_to_the_next() {
    let store = MemoryStore::new();
    let svc = layer(&store, QueueOrder::Fifo).layer(service_fn(work));
    let holder = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let mut first = Box::pin(svc.clone().oneshot(1));
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let second = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(store.queued("global"), 2);
    holder.await.unwrap().unwrap(); // the permit goes to `first`...
    drop(first); // ...which never runs again
    assert_eq!(second.await.unwrap().unwrap(), 1);
    assert_eq!(store.in_flight("global"), 0);
}
