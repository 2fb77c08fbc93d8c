//! Client side: attach keys to outgoing requests.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower_layer::Layer;
use tower_service::Service;

use super::key::{IDEMPOTENCY_KEY, IdempotencyKey};

/// Attaches an `Idempotency-Key` header to outgoing requests of the chosen
/// methods (default `POST` and `PATCH`) that carry none: the
/// [`IdempotencyKey`] found in the request's extensions (for instance one a
/// handler derived from its own request with [`IdempotencyKey::derive`]), or
/// else a fresh random one.
///
/// Put it *outside* the retry layer, so every attempt of one request carries
/// the same key:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use palisade::attempt::HttpClassifier;
/// use palisade::idempotency::{IdempotencyKey, IdempotencyKeyLayer};
/// use palisade::retry::RetryLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = ServiceBuilder::new()
///     .layer(IdempotencyKeyLayer::new())
///     .layer(RetryLayer::new(HttpClassifier::new()))
///     .service(service_fn(|req: Request<Full<Bytes>>| async move {
///         let key = req.headers()["idempotency-key"].clone();
///         Ok::<_, std::convert::Infallible>(Response::new(key))
///     }));
///
/// // In a handler: a key for the charge, derived from the incoming key.
/// let incoming = IdempotencyKey::new("order-42").unwrap();
/// let mut charge = Request::post("/charges").body(Full::new(Bytes::new())).unwrap();
/// charge.extensions_mut().insert(incoming.derive("charge"));
/// let sent = client.oneshot(charge).await.unwrap();
/// assert_eq!(sent.body(), incoming.derive("charge").as_str());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IdempotencyKeyLayer {
    methods: Arc<[Method]>,
}

impl IdempotencyKeyLayer {
    /// Keys `POST` and `PATCH` requests.
    pub fn new() -> Self {
        Self {
            methods: Arc::from([Method::POST, Method::PATCH]),
        }
    }

    /// The methods to key.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }
}

impl Default for IdempotencyKeyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for IdempotencyKeyLayer {
    type Service = IdempotencyKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyKeyService {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service of [`IdempotencyKeyLayer`].
#[derive(Debug, Clone)]
pub struct IdempotencyKeyService<S> {
    inner: S,
    methods: Arc<[Method]>,
}

impl<S> IdempotencyKeyService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for IdempotencyKeyService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if self.methods.contains(req.method()) && !req.headers().contains_key(IDEMPOTENCY_KEY) {
            let key = req
                .extensions()
                .get::<IdempotencyKey>()
                .cloned()
                .unwrap_or_else(IdempotencyKey::generate);
            req.headers_mut()
                .insert(IDEMPOTENCY_KEY, key.to_header_value());
        }
        self.inner.call(req)
    }
}
