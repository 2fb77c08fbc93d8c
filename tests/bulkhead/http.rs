//! Over HTTP: a refusal is a 503 problem with Retry-After; a never-shed
//! path passes a saturated bulkhead.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade::bulkhead::{BulkheadLayer, Error};
use palisade::load_shed::PriorityHeader;
use palisade::problem::types;
use tower::{Layer, ServiceExt, service_fn};

use crate::nz;

#[tokio::test(start_paused = true)]
async fn a_refusal_is_a_503_problem_with_retry_after() {
    let layer = BulkheadLayer::new(nz(1))
        .retry_after(Duration::from_millis(1_500))
        .priority(
            PriorityHeader::new(HeaderName::from_static("x-priority")).never_shed(["/health"]),
        );
    let svc = layer.layer(service_fn(|_: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let held = tokio::spawn(
        svc.clone()
            .oneshot(Request::get("/orders").body(Body::empty()).unwrap()),
    );
    tokio::task::yield_now().await;

    let Err(err @ Error::Shed(_)) = svc
        .clone()
        .oneshot(Request::get("/orders").body(Body::empty()).unwrap())
        .await
    else {
        panic!("a saturated bulkhead refuses");
    };
    assert_eq!(
        err.to_string(),
        "overloaded: no permit and no room in the queue"
    );
    let response = axum::response::IntoResponse::into_response(err);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], types::OVERLOADED);
    assert_eq!(body["status"], 503);

    // The health route is never shed.
    let health = svc
        .clone()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap());
    let health = tokio::spawn(health);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(health.await.unwrap().unwrap().status(), StatusCode::OK);
    held.await.unwrap().unwrap();
}
