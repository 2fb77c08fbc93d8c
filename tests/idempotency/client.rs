//! Client side: key attachment, one key for every retry (the retry layer
//! itself is tested in tests/retry).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use palisade::attempt::HttpClassifier;
use palisade::idempotency::{IdempotencyKey, IdempotencyKeyLayer, IdempotencyLayer};
use palisade::retry::{Backoff, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A downstream that records the key of each attempt and answers with the
/// statuses of `script` in turn (the last one repeats).
fn downstream(
    script: &'static [u16],
) -> (
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let mut log = log.lock().unwrap();
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = script[log.len().min(script.len() - 1)];
        log.push(key);
        let response = Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    (svc, seen)
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/charges")
        .body(Full::new(Bytes::from("{}")))
        .unwrap()
}

fn fast_retry() -> RetryLayer<HttpClassifier> {
    RetryLayer::new(HttpClassifier::new())
        .backoff(Backoff::exponential(Duration::from_millis(1), Duration::from_millis(10)).unwrap())
}

#[tokio::test(start_paused = true)]
async fn generated_key_is_the_same_on_every_retry() {
    let (svc, seen) = downstream(&[503, 503, 201]);
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .layer(fast_retry())
        .service(svc);
    let response = client.clone().oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two retries");
    let key = seen[0].clone().expect("a key was attached");
    assert!(IdempotencyKey::new(key.clone()).is_ok());
    assert!(
        seen.iter().all(|k| k.as_deref() == Some(key.as_str())),
        "{seen:?}"
    );

    // The next request gets a fresh key.
    let (svc, seen2) = downstream(&[201]);
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .service(svc);
    client.oneshot(request(Method::POST)).await.unwrap();
    assert_ne!(seen2.lock().unwrap()[0].as_deref(), Some(key.as_str()));
}

#[tokio::test]
async fn key_in_extensions_is_sent_and_existing_header_kept() {
    let (svc, seen) = downstream(&[200]);
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .service(svc);
    let incoming = IdempotencyKey::new("order-42").unwrap();
    let mut req = request(Method::POST);
    req.extensions_mut().insert(incoming.derive("charge"));
    client.clone().oneshot(req).await.unwrap();
    let mut explicit = request(Method::PATCH);
    explicit
        .headers_mut()
        .insert("idempotency-key", "caller-chose".parse().unwrap());
    client.clone().oneshot(explicit).await.unwrap();
    client.oneshot(request(Method::GET)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].as_deref(), Some(incoming.derive("charge").as_str()));
    assert_eq!(seen[1].as_deref(), Some("caller-chose"));
    assert_eq!(seen[2], None, "GET is not keyed");
}

#[tokio::test]
async fn server_layer_leaves_the_key_for_the_handler_to_derive_from() {
    // Server: the handler calls a downstream through the client layer with a
    // key derived from its own; a retried request derives the same key.
    let (downstream_svc, seen) = downstream(&[201]);
    let handler = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let client = ServiceBuilder::new()
            .layer(IdempotencyKeyLayer::new())
            .service(downstream_svc.clone());
        async move {
            let key = req
                .extensions()
                .get::<IdempotencyKey>()
                .expect("key extension")
                .clone();
            let mut call = request(Method::POST);
            call.extensions_mut().insert(key.derive("charge"));
            let answer = client.oneshot(call).await?;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                answer.status().as_str().to_owned(),
            ))))
        }
    });
    let server = ServiceBuilder::new()
        .layer(IdempotencyLayer::new().store_when(|_| false))
        .service(handler);
    let incoming = || {
        Request::post("/orders")
            .header("x-api-key", "k-shop")
            .header("idempotency-key", "order-42")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    server.clone().oneshot(incoming()).await.unwrap();
    server.oneshot(incoming()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0], seen[1],
        "a retried order charges with the same downstream key"
    );
    assert_eq!(
        seen[0].as_deref(),
        Some(
            IdempotencyKey::new("order-42")
                .unwrap()
                .derive("charge")
                .as_str()
        )
    );
}
