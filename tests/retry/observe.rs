//! What a retry reports: a counter per finished attempt by outcome, a
//! histogram of waits, and tracing events with the uniform fields.

use std::sync::atomic::Ordering;

use palisade::attempt::ErrorIsRetryable;
use palisade::retry::RetryLayer;
use tower::{Layer, ServiceExt};

use super::{Job, io, nz, quick_backoff, scripted};

#[cfg(feature = "metrics")]
#[test]
fn every_attempt_and_every_wait_is_counted_by_outcome() {
    use palisade::attempt::Budget;

    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let layer = RetryLayer::new(ErrorIsRetryable)
                .name("payments")
                .max_attempts(nz(3))
                .backoff(quick_backoff())
                .budget(Budget::new(nz(10), 1.0).unwrap());
            let reset = || Err(io(std::io::ErrorKind::ConnectionReset));
            // Fails twice, then answers: retried, retried, done.
            let (svc, _) = scripted(move |n| if n < 2 { reset() } else { Ok("ok") });
            layer.layer(svc).oneshot(Job::new(1)).await.unwrap();
            // Always fails: retried, retried, exhausted.
            let (svc, _) = scripted(move |_| reset());
            let _ = layer.layer(svc).oneshot(Job::new(2)).await;
            // Not replayable.
            let (svc, _) = scripted(move |_| reset());
            let once = Job {
                repeatable: false,
                ..Job::new(3)
            };
            let _ = layer.layer(svc).oneshot(once).await;
            // Refused: not transient.
            let (svc, _) = scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::PermissionDenied)));
            let _ = layer.layer(svc).oneshot(Job::new(4)).await;
            // 10 tokens, -2 +1, -3, -1 (not replayable), none for a
            // refusal: 5 left, and a failure's token leaves no more than
            // half: budget_exhausted.
            let (svc, calls) = scripted(move |_| reset());
            let _ = layer.layer(svc).oneshot(Job::new(5)).await;
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        })
    });
    let values = super::support::metric_samples(&snapshotter, "palisade_retry");
    let count = |outcome: &str| {
        values
            .get(&format!(
                "palisade_retry_decisions_total{{name=\"payments\",outcome=\"{outcome}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(count("retried"), 4.0, "{values:?}");
    assert_eq!(count("done"), 1.0, "{values:?}");
    assert_eq!(count("exhausted"), 1.0, "{values:?}");
    assert_eq!(count("not_replayable"), 1.0, "{values:?}");
    assert_eq!(count("stopped"), 1.0, "{values:?}");
    assert_eq!(count("budget_exhausted"), 1.0, "{values:?}");
    assert_eq!(
        values.get("palisade_retry_wait_seconds{name=\"payments\"}"),
        Some(&4.0),
        "one sample per wait: {values:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_an_event_with_the_uniform_fields() {
    let logs = super::support::CapturedLogs::start();
    let (svc, _) = scripted(|n| {
        if n == 0 {
            Err(io(std::io::ErrorKind::ConnectionReset))
        } else {
            Ok("ok")
        }
    });
    let svc = RetryLayer::new(ErrorIsRetryable)
        .name("inventory")
        .backoff(quick_backoff())
        .layer(svc);
    svc.oneshot(Job::new(1)).await.unwrap();
    let text = logs.text();
    let retried = text
        .lines()
        .find(|l| l.contains("outcome=\"retried\"") || l.contains("outcome=retried"))
        .unwrap_or_else(|| panic!("no retried event in:\n{text}"));
    for field in [
        "DEBUG",
        "layer",
        "retry",
        "name",
        "inventory",
        "attempt=1",
        "latency_us",
    ] {
        assert!(retried.contains(field), "{field} in {retried}");
    }
    let done = text
        .lines()
        .find(|l| l.contains("outcome=\"done\"") || l.contains("outcome=done"))
        .unwrap_or_else(|| panic!("no done event in:\n{text}"));
    assert!(
        done.contains("TRACE") && done.contains("attempt=2"),
        "{done}"
    );
    assert!(text.contains("wait_ms=1"), "{text}");
}

#[cfg(feature = "metrics")]
#[test]
fn a_failure_with_no_attempt_left_counts_as_exhausted_whatever_max_attempts() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            for attempts in [1, 2] {
                let (svc, _) =
                    scripted(|_| Err::<&str, _>(io(std::io::ErrorKind::ConnectionReset)));
                let _ = RetryLayer::new(ErrorIsRetryable)
                    .name("once")
                    .max_attempts(nz(attempts))
                    .backoff(quick_backoff())
                    .layer(svc)
                    .oneshot(Job::new(attempts))
                    .await;
            }
        })
    });
    let values = super::support::metric_samples(&snapshotter, "palisade_retry");
    let count = |outcome: &str| {
        values
            .get(&format!(
                "palisade_retry_decisions_total{{name=\"once\",outcome=\"{outcome}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        count("exhausted"),
        2.0,
        "one attempt allowed, one made, is the attempts used up: {values:?}"
    );
    assert_eq!(count("not_replayable"), 0.0, "{values:?}");
}
