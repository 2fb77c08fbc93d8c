//! Changing the timeout at run time through the layer's handle: the next
//! call gets the new one, a running call keeps its deadline, and every
//! clone and service of the layer follows.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use palisade::timeout::{Deadline, DeadlineRequest, Error, TimeoutLayer};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt};

use crate::{MS, never_answers};

const SEC: Duration = Duration::from_secs(1);

fn elapsed_budget<T: std::fmt::Debug>(
    result: Result<T, Error<std::convert::Infallible>>,
) -> Duration {
    match result {
        Err(Error::Elapsed { budget }) => budget,
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_raised_timeout_applies_from_the_next_call_and_a_running_call_keeps_its_own() {
    let layer = TimeoutLayer::new(2 * SEC);
    let handle = layer.handle();
    let mut svc = layer.layer(never_answers(Arc::new(AtomicBool::new(false))));

    svc.ready().await.unwrap();
    let mut before = task::spawn(svc.call("before"));
    assert_pending!(before.poll());
    handle.set_timeout(5 * SEC);
    assert_eq!(handle.timeout(), 5 * SEC);
    svc.ready().await.unwrap();
    let mut after = task::spawn(svc.call("after"));
    assert_pending!(after.poll());

    advance(2 * SEC).await;
    assert_eq!(elapsed_budget(assert_ready!(before.poll())), 2 * SEC);
    assert_pending!(after.poll());
    advance(3 * SEC - MS).await;
    assert_pending!(after.poll());
    advance(MS).await;
    assert_eq!(elapsed_budget(assert_ready!(after.poll())), 5 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_lowered_timeout_applies_from_the_next_call_and_a_running_call_keeps_its_own() {
    let layer = TimeoutLayer::new(5 * SEC);
    let handle = layer.handle();
    let mut svc = layer.layer(never_answers(Arc::new(AtomicBool::new(false))));

    svc.ready().await.unwrap();
    let mut before = task::spawn(svc.call("before"));
    assert_pending!(before.poll());
    handle.set_timeout(SEC);
    svc.ready().await.unwrap();
    let mut after = task::spawn(svc.call("after"));

    // Not polled until the new budget has passed: it still counts from
    // the call, with the timeout of the call.
    advance(SEC).await;
    assert_eq!(elapsed_budget(assert_ready!(after.poll())), SEC);
    assert_pending!(before.poll());
    advance(4 * SEC - MS).await;
    assert_pending!(before.poll());
    advance(MS).await;
    assert_eq!(elapsed_budget(assert_ready!(before.poll())), 5 * SEC);
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_the_layer_all_follow_the_handle() {
    let layer = TimeoutLayer::new(10 * SEC);
    let built_before = layer.layer(never_answers(Arc::new(AtomicBool::new(false))));
    let clone_of_built = built_before.clone();
    let layer_clone = layer.clone();
    // A handle from a clone steers the original too.
    layer_clone.handle().set_timeout(SEC);

    let built_after = layer_clone.layer(never_answers(Arc::new(AtomicBool::new(false))));
    for svc in [built_before, clone_of_built, built_after] {
        assert_eq!(svc.timeout(), SEC);
        let (result, took) = crate::timed(svc.oneshot("x")).await;
        assert_eq!(elapsed_budget(result), SEC);
        assert_eq!(took, SEC);
    }
    assert_eq!(layer.timeout(), SEC);
    assert_eq!(layer.handle().timeout(), SEC);
}

/// A request type of its own: a per-request timeout needs only
/// [`DeadlineRequest`].
#[derive(Debug, Default)]
struct Req {
    deadline: Option<Deadline>,
}

impl DeadlineRequest for Req {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

#[tokio::test(start_paused = true)]
async fn a_per_request_timeout_takes_the_new_timeout_as_its_maximum() {
    // A handle taken before `per_request` steers the per-request layer.
    let layer = TimeoutLayer::new(10 * SEC);
    let handle = layer.handle();
    let layer = layer.per_request();
    let mut svc = layer.layer(never_answers(Arc::new(AtomicBool::new(false))));

    let carried = || Req {
        deadline: Some(Deadline::after(3 * SEC)),
    };
    svc.ready().await.unwrap();
    let mut running = task::spawn(svc.call(carried()));
    assert_pending!(running.poll());

    handle.set_timeout(SEC);
    assert_eq!(layer.timeout(), SEC);
    svc.ready().await.unwrap();
    let (result, took) = crate::timed(svc.call(carried())).await;
    assert_eq!(
        elapsed_budget(result),
        SEC,
        "the new maximum shortens the 3 s deadline"
    );
    assert_eq!(took, SEC);

    // Raised above the carried deadline: the deadline is the shorter again.
    handle.set_timeout(60 * SEC);
    svc.ready().await.unwrap();
    let (result, _) = crate::timed(svc.call(carried())).await;
    assert_eq!(elapsed_budget(result), 3 * SEC);

    // The call made under the old maximum kept its 3 s deadline (passed
    // a second ago).
    assert_eq!(elapsed_budget(assert_ready!(running.poll())), 3 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_too_large_for_u64_nanoseconds_is_clamped_and_never_fires() {
    let layer = TimeoutLayer::new(SEC);
    let handle = layer.handle();
    handle.set_timeout(Duration::MAX);
    assert_eq!(handle.timeout(), Duration::from_nanos(u64::MAX));
    assert_eq!(layer.timeout(), Duration::from_nanos(u64::MAX));
    assert_eq!(
        TimeoutLayer::new(Duration::MAX).timeout(),
        Duration::from_nanos(u64::MAX)
    );

    let mut svc = layer.layer(never_answers(Arc::new(AtomicBool::new(false))));
    svc.ready().await.unwrap();
    let mut call = task::spawn(svc.call("x"));
    assert_pending!(call.poll());
    advance(Duration::from_secs(86_400 * 365)).await;
    assert_pending!(call.poll());

    // And a per-request layer takes it without overflowing its deadline.
    let per_request = TimeoutLayer::new(Duration::MAX).per_request();
    let mut svc = per_request.layer(never_answers(Arc::new(AtomicBool::new(false))));
    svc.ready().await.unwrap();
    let mut call = task::spawn(svc.call(Req::default()));
    assert_pending!(call.poll());
}
