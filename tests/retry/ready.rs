//! Readiness: `poll_ready` before the first call, and before every retry on
//! the layer's clone of the inner service.

use std::time::Duration;

use palisade::attempt::ErrorIsRetryable;
use palisade::retry::RetryLayer;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower_test::{assert_request_eq, mock};

use super::{Job, quick_backoff};

#[tokio::test(start_paused = true)]
async fn every_attempt_waits_for_the_inner_service_to_be_ready() {
    let (mut svc, mut handle) = mock::spawn_layer::<Job, &'static str, _>(
        RetryLayer::new(ErrorIsRetryable).backoff(quick_backoff()),
    );
    handle.allow(0);
    assert_pending!(svc.poll_ready(), "not ready until the inner one is");
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Job::new(7)));
    assert_pending!(fut.poll());
    assert_request_eq!(handle, Job::new(7)).send_error("connection reset");

    // The retry waits its backoff, then for readiness: the allowance is spent.
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_pending!(fut.poll());
    assert!(
        handle.poll_request().is_pending(),
        "no call before poll_ready"
    );

    handle.allow(1);
    assert!(fut.is_woken());
    assert_pending!(fut.poll());
    assert_request_eq!(handle, Job::new(7)).send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
}
