#![cfg(feature = "timeout")]
//! Timeout layer: fixed budgets, per-request deadlines, header budgets,
//! propagation and the 504 problem, all on paused time.

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(all(feature = "http", feature = "axum"))]
mod http;
mod metrics;
mod reload;
#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade::timeout::{EXTERNAL_TIMEOUT, Error, INTERNAL_TIMEOUT, Timeout, TimeoutLayer};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// Sets its flag when dropped: shows the inner future was dropped.
#[derive(Debug)]
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A service that never answers; each future holds a [`DropFlag`].
pub fn never_answers<Req>(
    dropped: Arc<AtomicBool>,
) -> impl Service<Req, Response = &'static str, Error = Infallible, Future: Send> + Clone {
    service_fn(move |_req: Req| {
        let flag = DropFlag(dropped.clone());
        async move {
            std::future::pending::<()>().await;
            drop(flag);
            Ok("never")
        }
    })
}

/// Awaits `fut` and returns its output with the (paused) time it took.
pub async fn timed<F: Future>(fut: F) -> (F::Output, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_budget_exactly_not_a_millisecond_before() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = TimeoutLayer::new(Duration::from_secs(2)).layer(never_answers(dropped.clone()));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call("GET /slow"));

    assert_pending!(fut.poll());
    advance(Duration::from_secs(2) - MS).await;
    assert_pending!(fut.poll());
    assert!(!dropped.load(Ordering::SeqCst));

    advance(MS).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert!(matches!(err, Error::Elapsed { budget } if budget == Duration::from_secs(2)));
    assert_eq!(err.to_string(), "request timed out after 2s");
}

#[tokio::test(start_paused = true)]
async fn inner_future_is_dropped_when_the_budget_runs_out() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = Timeout::new(never_answers(dropped.clone()), Duration::from_secs(1));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(()));
    assert_pending!(fut.poll());
    advance(Duration::from_secs(1)).await;
    assert!(assert_ready!(fut.poll()).unwrap_err().is_elapsed());
    // Dropped on timeout, while the caller still holds the response future.
    assert!(dropped.load(Ordering::SeqCst));
    drop(fut);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_drops_the_inner_future() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = Timeout::new(never_answers(dropped.clone()), Duration::from_secs(1));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(()));
    assert_pending!(fut.poll());
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn answer_within_budget_passes_through_and_inner_errors_stay_typed() {
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(999)).await;
        if n == 0 { Err("zero") } else { Ok(n * 2) }
    }));
    let (ok, took) = timed(svc.clone().oneshot(21)).await;
    assert_eq!(ok.unwrap(), 42);
    assert_eq!(took, Duration::from_millis(999));

    let err = svc.oneshot(0).await.unwrap_err();
    assert!(matches!(err, Error::Inner("zero")));
    assert_eq!(err.into_inner(), Some("zero"));
}

#[tokio::test(start_paused = true)]
async fn an_immediate_answer_needs_no_timer() {
    // Zero budget: a timer would be due at once, but the answer wins the tie.
    let svc = Timeout::new(
        service_fn(|n: u8| async move { Ok::<_, Infallible>(n) }),
        Duration::ZERO,
    );
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn presets_are_three_and_ten_seconds() {
    assert_eq!(INTERNAL_TIMEOUT, Duration::from_secs(3));
    assert_eq!(EXTERNAL_TIMEOUT, Duration::from_secs(10));
    assert_eq!(TimeoutLayer::internal().timeout(), INTERNAL_TIMEOUT);
    assert_eq!(TimeoutLayer::external().timeout(), EXTERNAL_TIMEOUT);

    let dropped = Arc::new(AtomicBool::new(false));
    for (layer, budget) in [
        (TimeoutLayer::internal(), INTERNAL_TIMEOUT),
        (TimeoutLayer::external(), EXTERNAL_TIMEOUT),
    ] {
        let (res, took) = timed(layer.layer(never_answers(dropped.clone())).oneshot(())).await;
        assert!(matches!(res, Err(Error::Elapsed { budget: b }) if b == budget));
        assert_eq!(took, budget);
    }
}

/// As tower's: the budget bounds the call, however late its future is first
/// polled (the inner service may have started work at the call).
#[tokio::test(start_paused = true)]
async fn a_fixed_budget_counts_from_the_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = Timeout::new(never_answers(dropped.clone()), Duration::from_secs(2));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(()));
    advance(Duration::from_secs(1)).await;
    assert_pending!(fut.poll());
    advance(Duration::from_secs(1) - MS).await;
    assert_pending!(fut.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    advance(MS).await;
    assert!(assert_ready!(fut.poll()).unwrap_err().is_elapsed());
    assert!(dropped.load(Ordering::SeqCst));
}

/// A future first polled after its budget ran out times out on that poll,
/// unless the answer is already there.
#[tokio::test(start_paused = true)]
async fn a_future_first_polled_after_its_budget_times_out_at_once() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = Timeout::new(never_answers(dropped.clone()), Duration::from_secs(1));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(()));
    advance(Duration::from_secs(5)).await;
    assert!(assert_ready!(fut.poll()).unwrap_err().is_elapsed());
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_are_inner_errors() {
    let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
    handle.send_error("not ready");
    let mut svc = Timeout::new(mock, Duration::from_secs(1));
    let err = svc.ready().await.map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Inner(_)));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_emits_a_debug_event_with_the_budget() {
    let logs = support::CapturedLogs::start();

    let dropped = Arc::new(AtomicBool::new(false));
    let svc = Timeout::new(never_answers(dropped), Duration::from_millis(1500));
    assert!(svc.oneshot(()).await.unwrap_err().is_elapsed());

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("request timed out"))
        .unwrap_or_else(|| panic!("no timeout event in:\n{text}"));
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains("budget_ms=1500"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn every_decision_is_an_event_with_the_uniform_fields() {
    let logs = support::CapturedLogs::start();

    let svc = TimeoutLayer::new(Duration::from_secs(1))
        .name("inventory")
        .layer(service_fn(|wait: Duration| async move {
            tokio::time::sleep(wait).await;
            Ok::<_, Infallible>(())
        }));
    svc.clone()
        .oneshot(Duration::from_millis(250))
        .await
        .unwrap();
    assert!(
        svc.oneshot(Duration::from_secs(5))
            .await
            .unwrap_err()
            .is_elapsed()
    );

    let text = logs.text();
    let line = |outcome: &str| {
        text.lines()
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{text}"))
            .to_owned()
    };
    let completed = line("completed");
    for field in [
        "TRACE",
        "layer=\"timeout\"",
        "name=\"inventory\"",
        "latency_us=250000",
    ] {
        assert!(completed.contains(field), "{field} missing in {completed}");
    }
    let timed_out = line("timed_out");
    for field in [
        "DEBUG",
        "layer=\"timeout\"",
        "name=\"inventory\"",
        "latency_us=1000000",
    ] {
        assert!(timed_out.contains(field), "{field} missing in {timed_out}");
    }
}
