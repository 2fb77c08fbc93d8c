//! What is retried: errors by their `Retryable` verdict, an open breaker
//! never, a request of its own type by its own `Replay`, any classifier.

use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade::attempt::{Budget, ErrorIsRetryable, Verdict};
use palisade::circuit_breaker::{self, CircuitBreakerLayer, Config};
use palisade::retry::{Error, RetryLayer};
use tower::{Layer, ServiceBuilder, ServiceExt};

use super::{Job, io, nz, quick_backoff, scripted};

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_never_retried_and_spends_no_budget() {
    let (svc, calls) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
    let budget = Budget::default();
    let breaker = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(2))
            .open_wait(Duration::from_secs(60)),
    );
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::new(ErrorIsRetryable)
                .max_attempts(nz(5))
                .backoff(quick_backoff())
                .budget(budget.clone()),
        )
        .layer(breaker)
        .service(svc);

    // Two failures open the breaker; the third attempt meets it open.
    let err = client.clone().oneshot(Job::new(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::Inner(circuit_breaker::Error::Open { .. })),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let balance = budget.balance();

    // Open: one refusal, returned at once, the budget untouched.
    let err = client.oneshot(Job::new(2)).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Inner(circuit_breaker::Error::Open { .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(budget.balance(), balance);
}

#[tokio::test(start_paused = true)]
async fn only_transient_errors_are_retried_and_attempts_are_bounded() {
    let (svc, calls) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::PermissionDenied)));
    let layer = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(nz(4))
        .backoff(quick_backoff());
    let _ = layer.layer(svc).oneshot(Job::new(1)).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not transient: no retry");

    let (svc, calls) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
    let err = layer.layer(svc).oneshot(Job::new(1)).await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "max_attempts, the first included"
    );
    assert_eq!(
        err.into_inner().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );

    let (svc, calls) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
    let once = RetryLayer::new(ErrorIsRetryable).max_attempts(nz(1));
    let _ = once.layer(svc).oneshot(Job::new(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt: no retry");
}

#[tokio::test(start_paused = true)]
async fn a_request_type_of_its_own_is_replayed_by_its_own_rule() {
    let layer = RetryLayer::new(ErrorIsRetryable).backoff(quick_backoff());
    let flaky = |n| {
        if n == 0 {
            Err(io(std::io::ErrorKind::ConnectionReset))
        } else {
            Ok("ok")
        }
    };
    let (svc, calls) = scripted(flaky);
    assert_eq!(layer.layer(svc).oneshot(Job::new(1)).await.unwrap(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (svc, calls) = scripted(flaky);
    let once = Job {
        repeatable: false,
        ..Job::new(2)
    };
    let err = layer.layer(svc).oneshot(once).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not replayable: sent once");
}

#[tokio::test(start_paused = true)]
async fn any_function_classifies_and_a_done_answer_is_returned_as_is() {
    // A service that answers with a status code of its own: 1 means "busy".
    let (svc, calls) =
        scripted(|n| Ok::<_, std::convert::Infallible>(if n < 2 { "busy" } else { "ok" }));
    let classify = |result: &Result<&'static str, std::convert::Infallible>| match result {
        Ok("busy") => Verdict::Retry {
            after: Some(Duration::from_millis(5)),
        },
        _ => Verdict::Done,
    };
    let svc = RetryLayer::new(classify).layer(svc);
    assert_eq!(svc.clone().oneshot(Job::new(1)).await.unwrap(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A busy answer on the last attempt is still the answer, not an error.
    let (busy, _) = scripted(|_| Ok::<_, std::convert::Infallible>("busy"));
    let svc = RetryLayer::new(classify).layer(busy);
    assert_eq!(svc.oneshot(Job::new(2)).await.unwrap(), "busy");
}
