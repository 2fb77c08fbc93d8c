//! Every middleware of the demo, server side and client side, configured
//! here and nowhere else.
//!
//! Server side, per request, outermost first:
//!
//! ```text
//! request span (request id on every log line) + request metrics -> rejection counters
//!   /orders, /orders/{id}, /products/{id}:  rate limit (one layer, one set of buckets)
//!   POST /orders:                             -> validate -> idempotency -> handler
//! ```
//!
//! The order is the point:
//!
//! 1. **Rate limit first.** A flood is turned away before it costs a body
//!    read, a JSON parse or a store round trip, and a rejected request
//!    leaves nothing behind (no idempotency record to trip over later).
//! 2. **Validation second.** Bad input is refused at the edge, before the
//!    idempotency layer records the key: a request rejected by validation
//!    stores nothing, so the same key with a corrected body then succeeds.
//! 3. **Idempotency last, next to the handler.** It records only requests
//!    that will really run, replays their final answer, answers 409 while
//!    the first is in flight and 422 for the same key with another body.
//!    It does not store 502/503/504 (nor any 5xx): the client may retry those.
//!
//! Client side (payments), outermost first:
//!
//! ```text
//! Idempotency-Key (the same on every attempt: it is set once, outside the retry)
//!   -> retry (timeouts, connect errors, 5xx; never an open breaker)
//!     -> circuit breaker (outside the timeout, so a timeout counts as a failure)
//!       -> timeout (per attempt)
//!         -> transport (hyper-util Client; body read; 5xx is an error)
//! ```
//!
//! Recommendations: breaker -> timeout -> transport, no retry (the product
//! page degrades instead, at once while the breaker is open).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::{Method, Response as HttpResponse};
use palisade::BoxError;
use palisade::circuit_breaker::{self, CircuitBreakerLayer, Handle, State};
use palisade::idempotency::{self, IdempotencyKeyLayer, IdempotencyLayer, RetryPolicy};
use palisade::key::{ClientIp, Header, Or};
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{self, Quota, RateLimitLayer};
use palisade::timeout::{self, TimeoutLayer};
use palisade::validate::{UnknownFields, ValidateLayer};
use tower::ServiceBuilder;
use tower::retry::{Policy, RetryLayer};
use tower::util::BoxCloneSyncService;
use tracing::Instrument;

use crate::clients::{BreakerProbe, BreakerState, HttpClient, TransportError, Upstream, transport};
use crate::config::Config;
use crate::routes;
use crate::state::{AppState, Rejection, Stores};
use crate::telemetry;

/// Largest `POST /orders` body: 64 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long an order's idempotency record is kept.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Retries of one payment after its first attempt.
pub(crate) const PAYMENT_RETRIES: u32 = 2;

/// Who is calling: `X-Api-Key`, else the peer IP from axum's `ConnectInfo`
/// (`X-Forwarded-For` is ignored: no proxy is trusted). Rate limits and
/// idempotency keys are scoped by it.
pub(crate) type CallerKey = Or<Header, ClientIp>;

/// The caller key extractor; see [`CallerKey`].
pub(crate) fn caller_key() -> CallerKey {
    Header::api_key().or(ClientIp::new().peer(|ext| {
        ext.get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
    }))
}

/// `/orders`, `/orders/{id}` and `/products/{id}` with their layers, over
/// the stores the configuration asks for (memory, or Redis with `REDIS_URL`).
pub(crate) fn api_routes(state: &AppState) -> Router<AppState> {
    let config = &state.config;
    let quota =
        Quota::per_second(config.rate_limit_per_second.get()).burst(config.rate_limit_burst.get());
    match &*state.stores {
        Stores::Memory => api_routes_with(
            config,
            RateLimitLayer::memory(quota),
            IdempotencyLayer::memory(),
        ),
        Stores::Redis(conn) => api_routes_with(
            config,
            RateLimitLayer::redis(rate_limit::RedisStore::new(conn.clone()), quota),
            IdempotencyLayer::redis(idempotency::RedisStore::new(conn.clone())),
        ),
    }
}

fn api_routes_with<RS, IS>(
    config: &Config,
    rate_limit: RateLimitLayer<RS>,
    idempotency: IdempotencyLayer<IS>,
) -> Router<AppState>
where
    RS: rate_limit::Store,
    IS: idempotency::Store,
{
    // (3, innermost) Idempotency, scoped per caller, kept 24 h. The lease
    // outlives the slowest payment (every attempt timing out), so a request
    // still running is never taken over by a duplicate.
    let slowest_payment = config.payment_timeout * (PAYMENT_RETRIES + 2);
    let idempotency = idempotency
        .scope(caller_key())
        .ttl(IDEMPOTENCY_TTL)
        .lease(slowest_payment.max(Duration::from_secs(60)))
        .max_request_body(MAX_BODY_BYTES);
    // (2) Validation: 415 unless JSON, 413 past 64 KiB, 400 malformed, 422
    // with pointers. Unknown fields are refused by `CreateOrder` itself
    // (`deny_unknown_fields`, also stated in the OpenAPI document), which
    // is cheaper than the layer listing every one.
    let validate = ValidateLayer::new()
        .name("orders")
        .body_limit(MAX_BODY_BYTES)
        .unknown_fields(UnknownFields::Allow)
        .json::<routes::CreateOrder>();
    // `MethodRouter::layer` wraps what is already there: innermost first.
    // Each palisade layer has its `ProblemLayer` (errors -> RFC 9457
    // responses) and, outside it, the mark `/admin/stats` counts it by.
    let create = post(routes::create_order)
        .layer::<_, Infallible>(
            ServiceBuilder::new()
                .layer(middleware::map_response(mark_idempotency))
                .layer(ProblemLayer::new())
                .layer(idempotency),
        )
        .layer::<_, Infallible>(
            ServiceBuilder::new()
                .layer(middleware::map_response(mark_validation))
                .layer(ProblemLayer::new())
                .layer(validate),
        );
    // (1, outermost) One rate limit layer over both routers, so a caller
    // has one bucket for /orders and /products; allowed responses carry
    // `RateLimit`, refusals are 429 with `Retry-After` and `RateLimit-Policy`.
    let rate_limit = rate_limit.key(caller_key()).http_headers();
    Router::new()
        .route("/orders", create)
        .route("/orders/{id}", get(routes::get_order))
        .route("/products/{id}", get(routes::get_product))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_response(mark_rate_limited))
                .layer(ProblemLayer::new())
                .layer(rate_limit),
        )
}

/// Marks a refusal of a layer (not a handler's answer, which carries its
/// own mark, nor a replayed answer) for the counters.
fn mark<B>(mut response: HttpResponse<B>, rejection: Rejection) -> HttpResponse<B> {
    let replayed = response
        .headers()
        .contains_key(idempotency::IDEMPOTENT_REPLAYED);
    if !replayed && response.extensions().get::<Rejection>().is_none() {
        response.extensions_mut().insert(rejection);
    }
    response
}

async fn mark_rate_limited<B>(response: HttpResponse<B>) -> HttpResponse<B> {
    match response.status() {
        StatusCode::TOO_MANY_REQUESTS => mark(response, Rejection::RateLimited),
        _ => response,
    }
}

async fn mark_validation<B>(response: HttpResponse<B>) -> HttpResponse<B> {
    match response.status() {
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => mark(response, Rejection::Validation),
        _ => response,
    }
}

async fn mark_idempotency<B>(response: HttpResponse<B>) -> HttpResponse<B> {
    match response.status() {
        StatusCode::CONFLICT => mark(response, Rejection::IdempotencyConflict),
        StatusCode::UNPROCESSABLE_ENTITY => mark(response, Rejection::IdempotencyMismatch),
        // A missing or malformed key is bad input.
        StatusCode::BAD_REQUEST => mark(response, Rejection::Validation),
        _ => response,
    }
}

/// Around everything: a span per request (so its id is on every log line of
/// the request), the request metrics of `/metrics` and the rejection
/// counters of `/admin/stats`.
pub(crate) fn outermost(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(request_span))
            .layer(middleware::from_fn_with_state(
                state.stats.clone(),
                crate::state::count_rejections,
            )),
    )
}

/// The response header that carries the request id.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Opens the request's span: a request id (the caller's `X-Request-Id` when
/// it is a sane value, else a new one), method and path, then logs the
/// outcome, records it in `http_server_request_duration_seconds` and echoes
/// the id in the response.
async fn request_span(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| (1..=64).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        // Not a secret, only unique enough to find a request in the logs:
        // a fast PRNG, not a system call per request.
        .unwrap_or_else(|| format!("{:032x}", fastrand::u128(..)));
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    // The route's pattern, not its path: `/orders/{id}` is one series.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    async move {
        let started = tokio::time::Instant::now();
        let mut response = next.run(req).await;
        let elapsed = started.elapsed();
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "served"
        );
        telemetry::record_request(
            &method,
            route.as_ref().map(MatchedPath::as_str),
            response.status(),
            elapsed,
        );
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
    .instrument(span)
    .await
}

/// The error at the top of a client stack, before boxing.
pub(crate) type StackError = circuit_breaker::Error<timeout::Error<TransportError>>;

/// Retries what [`RetryPolicy`] deems safe (a keyed or idempotent request,
/// transport errors and 5xx, within a budget), but never a call the breaker
/// refused: that would only spin against an open circuit.
#[derive(Debug, Clone)]
pub(crate) struct RetryUnlessOpen(RetryPolicy);

impl<B: Clone, R, E> Policy<http::Request<B>, HttpResponse<R>, circuit_breaker::Error<E>>
    for RetryUnlessOpen
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<B>,
        result: &mut Result<HttpResponse<R>, circuit_breaker::Error<E>>,
    ) -> Option<Self::Future> {
        if matches!(result, Err(e) if e.is_open()) {
            return None;
        }
        self.0.retry(req, result)
    }

    fn clone_request(&mut self, req: &http::Request<B>) -> Option<http::Request<B>> {
        Policy::<http::Request<B>, HttpResponse<R>, circuit_breaker::Error<E>>::clone_request(
            &mut self.0,
            req,
        )
    }
}

fn probe(handle: Handle) -> BreakerProbe {
    BreakerProbe::new(move || match handle.state() {
        State::Open | State::ForcedOpen => BreakerState::Open,
        State::HalfOpen => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    })
}

/// The payment provider's client stack.
pub(crate) fn payment_stack(config: &Config, client: HttpClient) -> (Upstream, BreakerProbe) {
    // Opens after 5 failed attempts in a row, for BREAKER_OPEN_MS.
    let breaker = CircuitBreakerLayer::new()
        .open_wait(config.breaker_open)
        .name("payment");
    let handle = breaker.handle();
    let retry = RetryUnlessOpen(
        RetryPolicy::new()
            .max_retries(PAYMENT_RETRIES)
            .backoff(Duration::from_millis(20), Duration::from_millis(200)),
    );
    let stack = ServiceBuilder::new()
        .map_err(|e: StackError| BoxError::from(e))
        // The key is set here, once: every attempt below carries it, and the
        // provider charges a key once, so retrying a charge is safe.
        .layer(IdempotencyKeyLayer::new().methods([Method::POST]))
        .layer(RetryLayer::new(retry))
        .layer(breaker)
        .layer(TimeoutLayer::new(config.payment_timeout).name("payment"))
        .service(transport(client));
    (BoxCloneSyncService::new(stack), probe(handle))
}

/// The recommendations service's client stack: no retry (a product page
/// degrades instead), a breaker so an open circuit answers at once.
pub(crate) fn recommendations_stack(
    config: &Config,
    client: HttpClient,
) -> (Upstream, BreakerProbe) {
    let breaker = CircuitBreakerLayer::new()
        .open_wait(config.breaker_open)
        .name("recommendations");
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        .map_err(|e: StackError| BoxError::from(e))
        .layer(breaker)
        .layer(TimeoutLayer::new(config.recommendations_timeout).name("recommendations"))
        .service(transport(client));
    (BoxCloneSyncService::new(stack), probe(handle))
}
