//! The request's deadline and the per-try timeout.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::attempt::ErrorIsRetryable;
use palisade::retry::{Error, RetryLayer};
use palisade::timeout::{Deadline, DeadlineRequest};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

use super::{Job, MS, nz, quick_backoff};

type Log = Arc<Mutex<Vec<(Instant, Option<Deadline>)>>>;

/// A job service that records when each attempt came and the deadline it
/// carried, and hangs on the attempts before `answer_from` (from 0).
fn hangs_until(
    answer_from: usize,
) -> (
    impl tower::Service<Job, Response = &'static str, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Log,
) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let svc = service_fn(move |job: Job| {
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push((Instant::now(), job.deadline()));
            seen.len() - 1
        };
        async move {
            if n < answer_from {
                std::future::pending::<()>().await;
            }
            Ok("ok")
        }
    });
    (svc, log)
}

#[tokio::test(start_paused = true)]
async fn a_250ms_deadline_with_a_100ms_per_try_timeout_makes_only_the_attempts_that_fit() {
    let (svc, log) = hangs_until(usize::MAX);
    let svc = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(nz(10))
        .backoff(quick_backoff())
        .per_try_timeout(100 * MS)
        .layer(svc);
    let start = Instant::now();
    let job = Job {
        deadline: Some(Deadline::after(250 * MS)),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();

    // 0..100 ms, a 1 ms wait, 101..201 ms; then 49 ms are left, less than a
    // per-try timeout: no third attempt.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        matches!(err, Error::Elapsed { budget } if budget == 100 * MS),
        "{err:?}"
    );
    assert!(start.elapsed() <= 250 * MS, "never past the deadline");
    for (at, deadline) in &log {
        assert_eq!(
            deadline.unwrap().instant(),
            *at + 100 * MS,
            "each attempt carries its own deadline"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_gets_what_is_left_of_the_deadline_when_less_than_a_try() {
    let (svc, log) = hangs_until(usize::MAX);
    let svc = RetryLayer::new(ErrorIsRetryable)
        .per_try_timeout(100 * MS)
        .layer(svc);
    let deadline = Deadline::after(60 * MS);
    let job = Job {
        deadline: Some(deadline),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();
    assert!(
        matches!(err, Error::Elapsed { budget } if budget == 60 * MS),
        "{err:?}"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, Some(deadline), "the earlier of the two");
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_cuts_a_hung_attempt_and_the_next_one_answers() {
    let (svc, log) = hangs_until(1);
    let svc = RetryLayer::new(ErrorIsRetryable)
        .backoff(quick_backoff())
        .per_try_timeout(Duration::from_secs(1))
        .layer(svc);
    let start = Instant::now();
    assert_eq!(svc.oneshot(Job::new(1)).await.unwrap(), "ok");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1].0 - start,
        Duration::from_secs(1) + MS,
        "cut at 1 s, 1 ms wait"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_alone_bounds_the_attempts_and_the_waits() {
    // No per-try timeout: the one attempt that hangs takes the whole budget.
    let (svc, log) = hangs_until(usize::MAX);
    let svc = RetryLayer::new(ErrorIsRetryable).layer(svc);
    let job = Job {
        deadline: Some(Deadline::after(300 * MS)),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();
    assert!(matches!(err, Error::Elapsed { budget } if budget == 300 * MS));
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_makes_no_attempt() {
    let (svc, log) = hangs_until(0);
    let svc = RetryLayer::new(ErrorIsRetryable).layer(svc);
    let job = Job {
        deadline: Some(Deadline::after(Duration::ZERO)),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();
    assert!(err.is_elapsed());
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_would_pass_the_deadline_is_not_taken() {
    // Attempts fail at once; the backoff (1 s) is longer than what is left.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: Job| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<&str, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) }
    });
    let backoff =
        palisade::retry::Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1))
            .unwrap()
            .jitter(palisade::retry::Jitter::None);
    let svc = RetryLayer::new(ErrorIsRetryable)
        .backoff(backoff)
        .layer(svc);
    let start = Instant::now();
    let job = Job {
        deadline: Some(Deadline::after(500 * MS)),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)), "the last answer, as it was");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "returned without waiting");
}

#[tokio::test(start_paused = true)]
async fn a_retry_never_starts_at_the_deadline_even_with_a_zero_per_try_timeout() {
    // The first attempt fails at once; the 10 ms backoff ends exactly at the
    // 10 ms deadline: no time is left for a second attempt.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: Job| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<&str, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) }
    });
    let backoff = palisade::retry::Backoff::exponential(10 * MS, 10 * MS)
        .unwrap()
        .jitter(palisade::retry::Jitter::None);
    let svc = RetryLayer::new(ErrorIsRetryable)
        .backoff(backoff)
        .per_try_timeout(Duration::ZERO)
        .layer(svc);
    let job = Job {
        deadline: Some(Deadline::after(10 * MS)),
        ..Job::new(1)
    };
    let err = svc.oneshot(job).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)), "the last answer: {err:?}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no attempt sent at the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_kept_waiting_for_readiness_starts_only_with_a_full_per_try_timeout_left() {
    use tokio_test::{assert_pending, task};
    use tower_test::{assert_request_eq, mock};

    let (mut svc, mut handle) = mock::spawn_layer::<Job, &'static str, _>(
        RetryLayer::new(ErrorIsRetryable)
            .backoff(quick_backoff())
            .per_try_timeout(100 * MS),
    );
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let job = Job {
        deadline: Some(Deadline::after(250 * MS)),
        ..Job::new(1)
    };
    let mut fut = task::spawn(svc.call(job.clone()));
    assert_pending!(fut.poll());
    let first = Job {
        deadline: Some(Deadline::after(100 * MS)),
        ..job
    };
    assert_request_eq!(handle, first).send_error("connection reset");
    // At 0 ms, 249 ms of the deadline are left after the 1 ms wait: a retry
    // fits. The inner service is not ready until 160 ms, when only 90 ms are
    // left, less than a per-try timeout.
    assert_pending!(fut.poll());
    tokio::time::advance(MS).await;
    assert_pending!(fut.poll());
    tokio::time::advance(159 * MS).await;
    let polled = fut.poll();
    handle.allow(1);
    if polled.is_pending() {
        let _ = fut.poll();
    }
    assert!(
        handle.poll_request().is_pending(),
        "no attempt started with 90 ms left of a 100 ms per-try timeout"
    );
    match polled {
        std::task::Poll::Ready(Err(err)) => assert!(err.is_elapsed(), "{err:?}"),
        other => panic!("not ready at the latest start: {other:?}"),
    }
}
