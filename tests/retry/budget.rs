//! The shared retry budget: an outage spends it, successes earn it back.

use std::sync::atomic::Ordering;

use palisade::attempt::{Budget, ErrorIsRetryable};
use palisade::retry::{Error, RetryLayer};
use tower::{Layer, ServiceExt};

use super::{Job, io, nz, quick_backoff, scripted};

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_during_an_outage_and_refills_after() {
    let outage = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let down = outage.clone();
    let (svc, calls) = scripted(move |_| {
        if down.load(Ordering::SeqCst) {
            Err(io(std::io::ErrorKind::ConnectionRefused))
        } else {
            Ok("ok")
        }
    });
    let budget = Budget::new(nz(10), 0.1).unwrap();
    let layer = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(nz(5))
        .backoff(quick_backoff())
        .budget(budget.clone());
    let svc = layer.layer(svc);

    for _ in 0..20 {
        let err = svc.clone().oneshot(Job::new(1)).await.unwrap_err();
        assert!(matches!(err, Error::Inner(_)));
    }
    // The first request: 5 attempts, the budget 10 -> 5. Every later one:
    // its first attempt only. Without the budget: 20 * 5 = 100.
    assert_eq!(calls.load(Ordering::SeqCst), 5 + 19);
    assert_eq!(budget.balance(), 0.0);

    // Recovery: 61 successes earn 6.1 tokens, so a failure's token leaves
    // more than half of 10.
    outage.store(false, Ordering::SeqCst);
    for _ in 0..61 {
        svc.clone().oneshot(Job::new(2)).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 24 + 61);

    // One failure is retried again.
    let (flaky, seen) = scripted(|n| {
        if n == 0 {
            Err(io(std::io::ErrorKind::ConnectionReset))
        } else {
            Ok("ok")
        }
    });
    let flaky = layer.layer(flaky);
    assert_eq!(flaky.oneshot(Job::new(3)).await.unwrap(), "ok");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "retried once the budget refilled"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_the_layer_and_their_services_share_one_budget() {
    let layer = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(nz(10))
        .backoff(quick_backoff());
    let copy = layer.clone();
    let (failing, calls) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
    // Spent through the first layer's service: 10 -> 5 tokens.
    let _ = layer.layer(failing.clone()).oneshot(Job::new(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // The clone's service finds it spent: one attempt.
    let _ = copy.layer(failing).oneshot(Job::new(2)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // Another layer has a budget of its own.
    let (other, other_calls) =
        scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
    let _ = RetryLayer::new(ErrorIsRetryable)
        .max_attempts(nz(3))
        .backoff(quick_backoff())
        .layer(other)
        .oneshot(Job::new(3))
        .await;
    assert_eq!(other_calls.load(Ordering::SeqCst), 3);
}
