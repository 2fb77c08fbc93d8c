//! What the layer reports: the limit gauge and the calls counter, and one
//! tracing event per limit change.

use std::convert::Infallible;
use std::time::Duration;

use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd, Error};
use palisade::load_shed::Reason;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::support::CapturedLogs;

const MS: Duration = Duration::from_millis(1);

/// A limit starting at 4 that backs off on answers slower than 5 ms, over a
/// service that answers after the milliseconds it is asked.
fn inventory()
-> impl Service<u64, Response = u64, Error = Error<Infallible>, Future: Send> + Clone + Send {
    let aimd = Aimd::new()
        .bounds(1, 4, 10)
        .unwrap()
        .latency_threshold(5 * MS);
    AdaptiveConcurrencyLayer::new(aimd)
        .name("inventory")
        .layer(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(ms)
        }))
}

#[tokio::test(start_paused = true)]
async fn a_limit_change_is_one_debug_event_with_the_limit_and_the_previous_one() {
    let logs = CapturedLogs::start();
    let svc = inventory();
    svc.clone().oneshot(1).await.unwrap();
    assert!(!logs.text().contains("limit changed"), "{}", logs.text());
    svc.oneshot(10).await.unwrap();
    let text = logs.text();
    let changes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("limit changed"))
        .collect();
    assert_eq!(changes.len(), 1, "{text}");
    assert!(changes[0].starts_with("DEBUG "), "{text}");
    assert!(
        changes[0].ends_with(
            "adaptive concurrency limit changed layer=\"adaptive_concurrency\" name=\"inventory\" limit=3 previous=4"
        ),
        "{text}"
    );
}

#[cfg(feature = "metrics")]
#[test]
fn the_gauge_follows_the_limit_and_calls_are_counted_by_outcome() {
    let (handle_limit, values) = crate::recording::record_metrics("palisade_adaptive", || async {
        let svc = inventory();
        // Slow: 4 x 0.9 = 3.6, a limit of 3.
        svc.clone().oneshot(10).await.unwrap();
        let held: Vec<_> = (0..3).map(|_| svc.clone().oneshot(100)).collect();
        let held = tokio::spawn(futures::future::join_all(held));
        tokio::task::yield_now().await;
        let Err(Error::Shed(shed)) = svc.clone().oneshot(1).await else {
            panic!("a fourth request over a limit of 3 is shed")
        };
        assert_eq!(shed.reason, Reason::Full);
        // Admitted after the backoff, they back off once more (3.24): the
        // limit and its gauge stay at 3.
        for answer in held.await.unwrap() {
            answer.unwrap();
        }
        3
    });
    let expected = [
        (
            "palisade_adaptive_concurrency_calls_total{name=\"inventory\",outcome=\"admitted\"}",
            4.0,
        ),
        (
            "palisade_adaptive_concurrency_calls_total{name=\"inventory\",outcome=\"full\"}",
            1.0,
        ),
        (
            "palisade_adaptive_concurrency_limit{name=\"inventory\"}",
            f64::from(handle_limit),
        ),
    ];
    for (key, value) in expected {
        assert_eq!(values.get(key), Some(&value), "{key} in {values:#?}");
    }
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn a_shed_request_is_a_503_overloaded_problem_with_retry_after() {
    use palisade::problem::{IntoProblem, types};

    let aimd = Aimd::new().bounds(1, 1, 1).unwrap();
    let svc = AdaptiveConcurrencyLayer::new(aimd)
        .retry_after(Duration::from_secs(3))
        .layer(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, palisade::problem::Problem>(ms)
        }));
    let held = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    let error = svc.oneshot(1).await.unwrap_err();
    let response = error.into_problem().into_response::<bytes::Bytes>();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "3");
    let body = String::from_utf8(response.into_body().to_vec()).unwrap();
    assert!(body.contains(types::OVERLOADED), "{body}");
    held.await.unwrap().unwrap();
}
