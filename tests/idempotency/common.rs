//! Shared helpers: a counting handler, request builders, response reading.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::idempotency::{IdempotencyLayer, Store};
use palisade::key::KeyExtractor;
use palisade::problem::ProblemLayer;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

pub type Req = Request<Full<Bytes>>;
pub type Handler =
    Arc<dyn Fn(Req, usize) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;
pub type App = BoxCloneSyncService<Req, Response<Full<Bytes>>, Infallible>;

/// Counts the calls that reach the handler.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The layer around a handler that gets the request and the number of the
/// call (0 for the first), behind `ProblemLayer`, with the body collected so
/// tests compare plain bytes.
pub fn harness<St, K>(layer: IdempotencyLayer<St, K>, handler: Handler) -> (App, Counter)
where
    St: Store,
    K: KeyExtractor<Req>,
{
    let counter = Counter::default();
    let calls = counter.0.clone();
    let inner = tower::service_fn(move |req: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let fut = handler(req, n);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let svc = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer)
        .service(inner)
        .and_then(
            |response: Response<palisade::idempotency::ResponseBody<Full<Bytes>>>| async move {
                let (parts, body) = response.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(Response::from_parts(parts, Full::new(bytes)))
            },
        );
    (BoxCloneSyncService::new(svc), counter)
}

/// A handler answering `status` with `body`, an `x-order-id` header and the
/// call number.
pub fn answer(status: StatusCode, body: &'static str) -> Handler {
    Arc::new(move |_req, n| {
        Box::pin(async move {
            Response::builder()
                .status(status)
                .header("x-order-id", "ord_1")
                .header("x-call", n.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        })
    })
}

/// The caller every request of [`post`] comes from.
pub const CALLER: &str = "k-caller-1";

/// A `POST /payments` from [`CALLER`] (its `X-Api-Key`, which the layer's
/// default scope reads) with `key` as its `Idempotency-Key`.
pub fn post(key: Option<&str>, body: &str) -> Req {
    post_as(CALLER, key, body)
}

/// A `POST /payments` from the caller with API key `caller`.
pub fn post_as(caller: &str, key: Option<&str>, body: &str) -> Req {
    let mut builder = Request::post("/payments")
        .header("content-type", "application/json")
        .header("x-api-key", caller);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    pub fn problem_type(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(&self.body).expect("problem json");
        json["type"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn send(app: &App, req: Req) -> Answer {
    let response = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Calls without consuming `app`, for tests that hold a future.
pub fn call(
    app: &App,
    req: Req,
) -> impl std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static {
    let mut svc = app.clone();
    async move { svc.ready().await.unwrap().call(req).await.unwrap() }
}
