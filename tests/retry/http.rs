//! HTTP: statuses, Retry-After in both forms and capped, unsafe methods
//! only with an Idempotency-Key, gRPC statuses and pushback. Ports the
//! retry cases of the idempotency client's tests to this layer.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use palisade::attempt::{Budget, GrpcClassifier, HttpClassifier};
use palisade::idempotency::{IdempotencyKey, IdempotencyKeyLayer};
use palisade::retry::RetryLayer;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use super::{nz, quick_backoff};

/// What the downstream saw of each attempt: when, and its key.
type Seen = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// A downstream that answers each attempt with the next of `script`
/// (status and headers; the last one repeats) and records it.
fn downstream(
    script: Vec<(u16, Vec<(&'static str, String)>)>,
) -> (
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let script = Arc::new(script);
    let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let mut log = log.lock().unwrap();
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, headers) = &script[log.len().min(script.len() - 1)];
        log.push((Instant::now(), key));
        let mut response = Response::builder().status(*status);
        for (name, value) in headers {
            response = response.header(*name, value);
        }
        let response = response.body(Full::new(Bytes::new())).unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    (svc, seen)
}

fn statuses(codes: &[u16]) -> Vec<(u16, Vec<(&'static str, String)>)> {
    codes.iter().map(|&c| (c, Vec::new())).collect()
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/charges")
        .body(Full::new(Bytes::from("{}")))
        .unwrap()
}

fn layer() -> RetryLayer<HttpClassifier> {
    RetryLayer::new(HttpClassifier::new()).backoff(quick_backoff())
}

#[tokio::test(start_paused = true)]
async fn a_post_without_a_key_is_never_retried() {
    let (svc, seen) = downstream(statuses(&[503, 200]));
    let client = ServiceBuilder::new().layer(layer()).service(svc);
    let response = client.oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a POST without a key is sent once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_put_and_a_keyed_post_are_retried_with_the_same_key() {
    let (svc, seen) = downstream(statuses(&[503, 200]));
    let client = ServiceBuilder::new().layer(layer()).service(svc);
    let response = client.oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2, "PUT is idempotent: retried");

    // The key layer outside the retry: every attempt carries one key.
    let (svc, seen) = downstream(statuses(&[409, 503, 201]));
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .layer(layer())
        .service(svc);
    let response = client.oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "a keyed POST in flight (409), then 503, retried"
    );
    let key = seen[0].1.clone().expect("a key was attached");
    assert!(IdempotencyKey::new(key.clone()).is_ok());
    assert!(
        seen.iter().all(|(_, k)| k.as_deref() == Some(key.as_str())),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried_and_a_final_503_is_returned_as_a_response() {
    let (svc, seen) = downstream(statuses(&[422]));
    let client = ServiceBuilder::new().layer(layer()).service(svc);
    let response = client.oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (svc, seen) = downstream(statuses(&[503]));
    let client = ServiceBuilder::new()
        .layer(layer().max_attempts(nz(3)))
        .service(svc);
    let response = client.oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 3, "one try and two retries");
}

#[tokio::test(start_paused = true)]
async fn a_delta_seconds_retry_after_is_honoured() {
    let (svc, seen) = downstream(vec![
        (429, vec![("retry-after", "2".to_owned())]),
        (200, Vec::new()),
    ]);
    let client = ServiceBuilder::new().layer(layer()).service(svc);
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].0 - seen[0].0,
        Duration::from_secs(2),
        "the server's wait, not the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn an_http_date_retry_after_is_honoured() {
    // An HTTP-date is read against the system clock, to the second: three
    // seconds from now is a wait of two to three seconds.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (svc, seen) = downstream(vec![(503, vec![("retry-after", date)]), (200, Vec::new())]);
    let client = ServiceBuilder::new().layer(layer()).service(svc);
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].0 - seen[0].0;
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_secs(3),
        "the date's wait, not the 1 ms backoff: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_cap_returns_the_answer_as_is() {
    let (svc, seen) = downstream(vec![
        (503, vec![("retry-after", "120".to_owned())]),
        (200, Vec::new()),
    ]);
    let client = ServiceBuilder::new()
        .layer(layer().max_retry_after(Duration::from_secs(30)))
        .service(svc);
    let start = Instant::now();
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["retry-after"],
        "120",
        "for the caller to decide"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_after_its_pushback_and_invalid_argument_is_not() {
    let (svc, seen) = downstream(vec![
        (
            200,
            vec![
                ("grpc-status", "14".to_owned()),
                ("grpc-retry-pushback-ms", "250".to_owned()),
            ],
        ),
        (200, vec![("grpc-status", "0".to_owned())]),
    ]);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(GrpcClassifier::new()).backoff(quick_backoff()))
        .service(svc);
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0 - seen[0].0, Duration::from_millis(250));

    let (svc, seen) = downstream(vec![(200, vec![("grpc-status", "3".to_owned())])]);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(GrpcClassifier::new()))
        .service(svc);
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "3");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "INVALID_ARGUMENT is the answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_negative_grpc_pushback_stops_at_once_and_spends_no_budget() {
    let (svc, seen) = downstream(vec![(
        200,
        vec![
            ("grpc-status", "14".to_owned()),
            ("grpc-retry-pushback-ms", "-1".to_owned()),
        ],
    )]);
    let budget = Budget::default();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(GrpcClassifier::new()).budget(budget.clone()))
        .service(svc);
    let response = client.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(budget.balance(), 10.0);
}

#[test]
fn an_elapsed_last_attempt_answers_504_and_an_inner_error_its_own_problem() {
    use palisade::problem::{IntoProblem, Problem, types};
    use palisade::retry::Error;

    let elapsed = Error::<Problem>::Elapsed {
        budget: Duration::from_millis(100),
    };
    assert_eq!(elapsed.to_string(), "attempt timed out after 100ms");
    let problem = elapsed.into_problem();
    assert_eq!(problem.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(problem.type_uri(), types::TIMED_OUT);
    assert_eq!(
        problem.extension("budget_ms"),
        Some(&serde_json::json!(100))
    );

    let inner = Error::Inner(Problem::new(StatusCode::BAD_GATEWAY)).into_problem();
    assert_eq!(inner.status(), StatusCode::BAD_GATEWAY);
}
