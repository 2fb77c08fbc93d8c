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

/// Its original answers every call with a reset; every clone fails
/// `poll_ready`, as a service that has died does, and counts the polls.
struct DiesWhenCloned {
    original: bool,
    failed_polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Clone for DiesWhenCloned {
    fn clone(&self) -> Self {
        Self {
            original: false,
            failed_polls: self.failed_polls.clone(),
        }
    }
}

impl tower::Service<Job> for DiesWhenCloned {
    type Response = &'static str;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<&'static str, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.original {
            return std::task::Poll::Ready(Ok(()));
        }
        let polls = self
            .failed_polls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(polls, 0, "a service that failed poll_ready is polled again");
        std::task::Poll::Ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }

    fn call(&mut self, _: Job) -> Self::Future {
        assert!(self.original, "called without being ready");
        std::future::ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_that_fails_poll_ready_is_discarded_not_polled_again() {
    use palisade::attempt::Budget;
    use tower::{Layer, ServiceExt};

    let failed_polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let svc = DiesWhenCloned {
        original: true,
        failed_polls: failed_polls.clone(),
    };
    let budget = Budget::default();
    let err = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(super::nz(5))
        .backoff(quick_backoff())
        .budget(budget.clone())
        .layer(svc)
        .oneshot(Job::new(1))
        .await
        .unwrap_err();
    let err = err.into_inner().expect("the readiness error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(
        failed_polls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the retries end with the readiness error, as tower's own Retry"
    );
    assert_eq!(
        budget.balance(),
        9.0,
        "the first attempt's failure took a token; a dead service on this side takes none"
    );
}
