//! Over HTTP: an axum router whose breaker answers 503 problem+json with
//! `Retry-After`.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum_core::response::IntoResponse;
use http_body_util::BodyExt;
use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Error, Outcome};
use palisade::problem::ProblemLayer;
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

use crate::{SEC, nz};

fn server_errors_fail(result: &Result<Response<Body>, Infallible>) -> Outcome {
    match result {
        Ok(response) if response.status().is_server_error() => Outcome::Failure,
        Ok(response) if response.status().is_client_error() => Outcome::Ignored,
        _ => Outcome::Success,
    }
}

async fn get_status(app: &Router, uri: &str) -> Response<Body> {
    app.clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_503_problem_json_with_retry_after() {
    let breaker = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(3))
            .open_wait(30 * SEC),
    )
    .classify(server_errors_fail);
    let handle = breaker.handle();
    let app = Router::new()
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(
            ServiceBuilder::new()
                .layer(ProblemLayer::new())
                .layer(breaker),
        );

    // 4xx answers are ignored: they never trip it.
    for _ in 0..10 {
        assert_eq!(
            get_status(&app, "/missing").await.status(),
            StatusCode::NOT_FOUND
        );
    }
    for _ in 0..3 {
        assert_eq!(
            get_status(&app, "/broken").await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert!(handle.state() != palisade::circuit_breaker::State::Closed);

    tokio::time::advance(SEC / 2).await;
    let response = get_status(&app, "/missing").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // 29.5 s left: rounded up to whole seconds.
    assert_eq!(response.headers()["retry-after"], "30");
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(body["retry_after"], 30);
    assert_eq!(body["type"], palisade::problem::types::CIRCUIT_OPEN);
    assert_eq!(body["title"], "Circuit open");
}

#[tokio::test]
async fn the_open_error_converts_into_a_response_and_the_inner_error_keeps_its_problem() {
    let response = Error::<Infallible>::Open {
        retry_after: SEC / 10,
    }
    .into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");

    let inner = palisade::problem::Problem::new(StatusCode::BAD_GATEWAY);
    let response = Error::Inner(inner).into_response();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get("retry-after").is_none());
}

/// Breaker outside, timeout inside: timeouts answer 504 and count as
/// failures; once open, the breaker answers 503 without waiting.
#[cfg(feature = "timeout")]
#[tokio::test(start_paused = true)]
async fn with_a_timeout_inside_timeouts_answer_504_then_the_open_breaker_503() {
    use palisade::timeout::{self, TimeoutLayer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let breaker = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(2))
            .open_wait(30 * SEC),
    )
    .classify(
        |result: &Result<Response<Body>, timeout::Error<Infallible>>| match result {
            Ok(response) if response.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure, // a timeout is a failure
        },
    );
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(60 * SEC).await;
                    "late"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ProblemLayer::new())
                .layer(breaker)
                .layer(TimeoutLayer::new(SEC)),
        );

    for _ in 0..2 {
        let response = get_status(&app, "/slow").await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let before = tokio::time::Instant::now();
    let response = get_status(&app, "/slow").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(before.elapsed(), std::time::Duration::ZERO, "fails fast");
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "the handler was not called while open"
    );
}
