//! A response future dropped at any await point leaks no permit.

use std::convert::Infallible;
use std::time::Duration;

use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd, Handle};
use palisade::load_shed::Queue;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// A limit held at 1, a queue of 4, and a service answering after `ms`.
fn one_at_a_time() -> (
    impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone,
    Handle,
) {
    let aimd = Aimd::new().bounds(1, 1, 1).unwrap();
    let layer =
        AdaptiveConcurrencyLayer::new(aimd).queue(Queue::new(4, Duration::from_secs(1)).unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(ms)
    }));
    (svc, handle)
}

#[tokio::test(start_paused = true)]
async fn dropped_before_its_first_poll() {
    let (svc, handle) = one_at_a_time();
    drop(svc.clone().oneshot(10));
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(svc.oneshot(10).await.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_the_inner_service_runs() {
    let (svc, handle) = one_at_a_time();
    let mut running = task::spawn(svc.clone().oneshot(100));
    assert_pending!(running.poll());
    assert_eq!(handle.in_flight(), 1);
    drop(running);
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(svc.oneshot(10).await.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_queued() {
    let (svc, handle) = one_at_a_time();
    let mut running = task::spawn(svc.clone().oneshot(100));
    assert_pending!(running.poll());
    let mut queued = task::spawn(svc.clone().oneshot(10));
    assert_pending!(queued.poll());
    assert_eq!(handle.queued(), 1);
    drop(queued);
    assert_eq!(handle.queued(), 0);
    assert_eq!(running.await.unwrap(), 100);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_after_its_permit_was_granted_but_before_it_ran() {
    let (svc, handle) = one_at_a_time();
    let mut running = task::spawn(svc.clone().oneshot(100));
    assert_pending!(running.poll());
    let mut granted = task::spawn(svc.clone().oneshot(10));
    assert_pending!(granted.poll());
    tokio::time::advance(100 * MS).await;
    assert_eq!(assert_ready_ok!(running.poll()), 100);
    // The permit went to the waiter, which is never polled again.
    assert!(granted.is_woken());
    assert_eq!(handle.in_flight(), 1);
    drop(granted);
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.queued(), 0);
    assert_eq!(svc.oneshot(10).await.unwrap(), 10);
}
