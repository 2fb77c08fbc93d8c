//! A dropped response future, at any await point, leaves nothing running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use palisade::attempt::ErrorIsRetryable;
use palisade::retry::RetryLayer;
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{Job, nz};

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Attempts fail at once (`fail_first` of them), then hang holding a flag.
fn fails_then_hangs(
    fail_first: usize,
    dropped: Arc<AtomicBool>,
) -> (
    impl Service<Job, Response = &'static str, Error = std::io::Error, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: Job| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        // Only a hanging attempt holds a flag: a failed one drops its own.
        let flag = (n >= fail_first).then(|| DropFlag(dropped.clone()));
        async move {
            if flag.is_none() {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            }
            std::future::pending::<()>().await;
            drop(flag);
            Ok("never")
        }
    });
    (svc, calls)
}

fn layer() -> RetryLayer<ErrorIsRetryable> {
    RetryLayer::new(ErrorIsRetryable).max_attempts(nz(10))
}

#[tokio::test(start_paused = true)]
async fn dropped_during_the_first_attempt() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (svc, calls) = fails_then_hangs(0, dropped.clone());
    let mut svc = layer().layer(svc);
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(Job::new(1)));
    assert_pending!(fut.poll());
    drop(fut);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the attempt's future was dropped"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_during_a_wait() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (svc, calls) = fails_then_hangs(usize::MAX, dropped);
    let mut svc = layer().layer(svc);
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(Job::new(1)));
    assert_pending!(fut.poll(), "waiting before the second attempt");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(fut);
    tokio::time::advance(Duration::from_secs(60)).await;
    tokio::task::yield_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt after the drop");
}

#[tokio::test(start_paused = true)]
async fn dropped_during_a_retry() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (svc, calls) = fails_then_hangs(1, dropped.clone());
    let mut svc = layer().layer(svc);
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(Job::new(1)));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(3)).await; // past any first wait
    assert_pending!(fut.poll());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the second attempt hangs");
    assert!(!dropped.load(Ordering::SeqCst));
    drop(fut);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the second attempt's future was dropped"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
