//! `poll_ready` tells the truth about a saturated global bulkhead, so tower's
//! own back-pressure (`LoadShed`, `Buffer`) works above it.

use std::convert::Infallible;
use std::time::Duration;

use palisade::bulkhead::BulkheadLayer;
use palisade::load_shed::Queue;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::load_shed::LoadShedLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::nz;

fn slow(ms: u64) -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
    let _ = ms;
    service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn a_saturated_bulkhead_is_not_ready_and_wakes_when_a_permit_frees() {
    let mut svc = BulkheadLayer::new(nz(1)).layer(slow(0));
    let held = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;

    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| svc.poll_ready(cx)));
    tokio::time::advance(Duration::from_millis(10)).await;
    held.await.unwrap().unwrap();
    assert!(ready.is_woken(), "the release wakes the waiting service");
    assert_ready_ok!(ready.enter(|cx, _| svc.poll_ready(cx)));
}

#[tokio::test(start_paused = true)]
async fn with_a_queue_it_is_ready_while_the_queue_has_room() {
    let layer = BulkheadLayer::new(nz(1)).queue(Queue::new(1, Duration::from_secs(1)).unwrap());
    let mut svc = layer.layer(slow(0));
    let held = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;
    let mut ready = task::spawn(());
    assert_ready_ok!(ready.enter(|cx, _| svc.poll_ready(cx)));
    let queued = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;
    assert_pending!(ready.enter(|cx, _| svc.poll_ready(cx)));
    held.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    assert!(ready.is_woken());
}

#[tokio::test(start_paused = true)]
async fn tower_load_shed_above_sheds_while_it_is_saturated() {
    let svc = ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(BulkheadLayer::new(nz(2)))
        .service(slow(0));
    let a = tokio::spawn(svc.clone().oneshot(10));
    let b = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn back_pressure_can_be_turned_off() {
    let mut svc = BulkheadLayer::new(nz(1))
        .back_pressure(false)
        .layer(slow(0));
    let held = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;
    let mut ready = task::spawn(());
    assert_ready_ok!(ready.enter(|cx, _| svc.poll_ready(cx)));
    held.await.unwrap().unwrap();
}
