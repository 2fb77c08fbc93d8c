//! Only requests that can be sent again are hedged: an HTTP `POST` only
//! with an `Idempotency-Key`. Errors pass through for HTTP and for a retry.

use std::io;

use http::{Request, Response, StatusCode};
use palisade::attempt::{HttpClassifier, IDEMPOTENCY_KEY, Retryable, Verdict};
use palisade::hedge::{Error, HedgeLayer};
use palisade::problem::IntoProblem;
use tower::{Layer, Service, ServiceExt};

use crate::{Backend, Plan, nz};

type Req = Request<String>;

/// An HTTP backend on top of `Backend`: 200 with the call number.
fn http_backend(
    backend: &Backend,
) -> impl Service<Req, Response = Response<String>, Error = io::Error, Future: Send> + Clone + use<>
{
    backend
        .service::<Req>(Plan::Ok(10))
        .map_response(|n| Response::new(n.to_string()))
}

fn get() -> Req {
    Request::get("/orders/1").body(String::new()).unwrap()
}

fn post(key: Option<&str>) -> Req {
    let mut builder = Request::post("/charges");
    if let Some(key) = key {
        builder = builder.header(IDEMPOTENCY_KEY, key);
    }
    builder.body("{}".to_owned()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_post_is_hedged_only_with_an_idempotency_key() {
    let backend = Backend::new();
    let svc = HedgeLayer::new(HttpClassifier::new())
        .min_samples(nz(10))
        .layer(http_backend(&backend));
    for _ in 0..10 {
        svc.clone().oneshot(get()).await.unwrap();
    }

    backend.then([Plan::Ok(100)]);
    let answer = svc.clone().oneshot(post(None)).await.unwrap();
    assert_eq!(answer.body(), "10", "the first and only attempt");
    assert_eq!(backend.counts.started(), 11, "never hedged");

    backend.then([Plan::Ok(100), Plan::Ok(1)]);
    let answer = svc.clone().oneshot(post(Some("k1"))).await.unwrap();
    assert_eq!(answer.body(), "12", "the hedge answered");
    assert_eq!(backend.counts.started(), 13);
    assert_eq!(backend.counts.cancelled(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_503_first_answer_waits_for_the_hedge() {
    let backend = Backend::new();
    let calls = backend.clone();
    let inner = tower::service_fn(move |req: Req| {
        let first = calls.counts.started() == 10;
        let mut svc = http_backend(&calls);
        async move {
            let mut response = svc.ready().await?.call(req).await?;
            if first {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, io::Error>(response)
        }
    });
    let svc = HedgeLayer::new(HttpClassifier::new())
        .min_samples(nz(10))
        .layer(inner);
    for _ in 0..10 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    // The first attempt answers 503 at 15 ms, after the hedge left at ~11 ms.
    backend.then([Plan::Ok(15), Plan::Ok(10)]);
    let answer = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.body(), "11");
}

#[test]
fn errors_pass_through_to_http_and_to_a_retry() {
    let reset: Error<io::Error> = Error::Inner(io::ErrorKind::ConnectionReset.into());
    assert_eq!(reset.verdict(), Verdict::Retry { after: None });
    assert_eq!(reset.to_string(), "connection reset");
    let problem: Error<palisade::problem::Problem> =
        Error::Inner(palisade::problem::Problem::new(StatusCode::BAD_GATEWAY));
    assert_eq!(problem.into_problem().status(), StatusCode::BAD_GATEWAY);
}
