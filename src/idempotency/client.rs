//! Client side: attach keys to outgoing requests, retry only what is safe.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{Method, Request, Response, StatusCode};
use tower::retry::Policy;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;
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
/// use palisade::idempotency::{IdempotencyKey, IdempotencyKeyLayer, RetryPolicy};
/// use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = ServiceBuilder::new()
///     .layer(IdempotencyKeyLayer::new())
///     .layer(RetryLayer::new(RetryPolicy::new()))
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

/// A [`tower::retry::Policy`] for HTTP clients that retries only what is
/// safe to repeat: requests of an idempotent method (`GET`, `HEAD`,
/// `OPTIONS`, `TRACE`, `PUT`, `DELETE`) or carrying an `Idempotency-Key`.
///
/// It retries transport errors and `408`, `409` (key in flight), `425`,
/// `429`, `500`, `502`, `503` and `504`, waits an exponential backoff with
/// jitter (or the response's `Retry-After` in seconds, when it is no longer
/// than the maximum backoff), and stops after `max_retries` or when the
/// shared [`TpsBudget`] is spent, so retries cannot multiply an outage. The
/// request body must be `Clone` (for instance `Full<Bytes>`).
///
/// Clones share the budget; use one policy (and its clones) per downstream.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoff<HasherRng>,
    max_backoff: Duration,
    max_retries: u32,
    attempts: u32,
}

impl RetryPolicy {
    /// Up to 3 retries, backoff from 50 ms to 2 s with full jitter, and a
    /// budget of 20 % retries on top of 10 retries per second, over 10 s.
    pub fn new() -> Self {
        Self::with_budget(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
    }

    /// The same with `budget`.
    pub fn with_budget(budget: TpsBudget) -> Self {
        let max_backoff = Duration::from_secs(2);
        Self {
            budget: Arc::new(budget),
            backoff: backoff(Duration::from_millis(50), max_backoff),
            max_backoff,
            max_retries: 3,
            attempts: 0,
        }
    }

    /// The most retries of one request.
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The backoff bounds.
    ///
    /// # Panics
    ///
    /// If `min > max` or `max` is zero.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = backoff(min, max);
        self.max_backoff = max;
        self
    }

    fn safe<B>(req: &Request<B>) -> bool {
        matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || req.headers().contains_key(IDEMPOTENCY_KEY)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

fn backoff(min: Duration, max: Duration) -> ExponentialBackoff<HasherRng> {
    ExponentialBackoffMaker::new(min, max, 1.0, HasherRng::default())
        .expect("backoff bounds: min <= max and max > 0")
        .make_backoff()
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        408 | 409 | 425 | 429 | 500 | 502 | 503 | 504
    )
}

impl<B: Clone, ResB, E> Policy<Request<B>, Response<ResB>, E> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<ResB>, E>,
    ) -> Option<Self::Future> {
        if self.attempts == 0 {
            self.budget.deposit();
        }
        let retry_after = match result {
            Ok(response) if !retryable_status(response.status()) => return None,
            Ok(response) => match response.headers().get(RETRY_AFTER) {
                Some(value) => {
                    let secs = value
                        .to_str()
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())?;
                    let wait = Duration::from_secs(secs);
                    if wait > self.max_backoff {
                        return None;
                    }
                    Some(wait)
                }
                None => None,
            },
            Err(_) => None,
        };
        if !Self::safe(req) || self.attempts >= self.max_retries || !self.budget.withdraw() {
            return None;
        }
        self.attempts += 1;
        let backoff = self.backoff.next_backoff();
        Some(match retry_after {
            Some(wait) => tokio::time::sleep(wait),
            None => backoff,
        })
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        if !Self::safe(req) {
            return None;
        }
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}
