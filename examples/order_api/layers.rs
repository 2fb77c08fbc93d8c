//! Every middleware of the demo, server side and client side, configured
//! here and nowhere else.
//!
//! Server side, per request, outermost first:
//!
//! ```text
//! request span (request id on every log line) -> rejection counters
//!   /orders, /orders/{id}, /products/{id}:  rate limit
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
//!    It must not store 502/503/504: the client may retry those.
//!
//! Client side (payments), outermost first:
//!
//! ```text
//! retry (payments only; safe: every attempt sends the same Idempotency-Key)
//!   -> circuit breaker (outside the timeout, so a timeout counts as a failure)
//!     -> timeout (per attempt)
//!       -> transport (hyper-util Client; body read; 5xx is an error)
//! ```
//!
//! Phase 2 fills the slots marked `PALISADE:` below; nothing outside this
//! file changes except `clients::classify`, which learns the layers' error
//! types.

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tracing::Instrument;

use crate::clients::{BreakerProbe, HttpClient, Upstream, transport};
use crate::config::Config;
use crate::routes;
use crate::state::{AppState, Rejection, count_rejections};

/// `/orders` and `/orders/{id}` with their layers.
pub(crate) fn order_routes(_state: &AppState) -> Router<AppState> {
    // `MethodRouter::layer` wraps what is already there, so the last
    // `.layer` call is the outermost: innermost first below.
    let create = post(routes::create_order);
    // PALISADE (3, innermost): idempotency, scoped per caller, 24 h:
    //   .layer(ServiceBuilder::new().layer(ProblemLayer::new()).layer(
    //       IdempotencyLayer::memory()            // or ::redis(conn) when config.redis_url is set
    //           .scope(|req: &Request| Some(routes::caller(req.headers(), req.extensions())))
    //           .ttl(Duration::from_secs(24 * 60 * 60))))
    //   Then `create_order` drops its key check (`idempotency_key`); the
    //   repository's unique key stays as the last line of defence.
    // PALISADE (2): validation of CreateOrder (415, 413 at 64 KiB, 400, 422
    //   with pointers, unknown fields refused):
    //   .layer(ServiceBuilder::new().layer(ProblemLayer::new()).layer(
    //       ValidateLayer::json::<routes::CreateOrder>().max_body_bytes(64 * 1024)))
    //   Then `create_order` takes the checked body from the layer instead of
    //   calling `validation::read_json` / `check_create_order`.
    Router::new()
        .route("/orders", create)
        .route("/orders/{id}", get(routes::get_order))
    // PALISADE (1, outermost): rate limit per caller (X-Api-Key, else the
    //   peer IP from ConnectInfo; X-Forwarded-For not trusted), one bucket
    //   shared with /products:
    //   .layer(ServiceBuilder::new().layer(ProblemLayer::new()).layer(rate_limit(state)))
    //   with rate_limit(state) = RateLimitLayer::memory(quota) or
    //   ::redis(conn, quota), quota = config.rate_limit_per_second per second,
    //   burst config.rate_limit_burst, built once and cloned into both routers.
}

/// `/products/{id}` with its layers.
pub(crate) fn product_routes(_state: &AppState) -> Router<AppState> {
    Router::new().route("/products/{id}", get(routes::get_product))
    // PALISADE (1): the same rate limit layer (and so the same buckets) as
    //   order_routes: .layer(ServiceBuilder::new().layer(ProblemLayer::new()).layer(rate_limit(state)))
}

/// Around everything: a span per request (so its id is on every log line of
/// the request) and the rejection counters of `/admin/stats`.
pub(crate) fn outermost(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(request_span))
            .layer(middleware::from_fn_with_state(
                state.stats.clone(),
                count_rejections,
            )),
    )
}

/// The response header that carries the request id.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Opens the request's span: a request id (the caller's `X-Request-Id` when
/// it is a sane value, else a new one), method and path, then logs the
/// outcome and echoes the id in the response.
async fn request_span(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| (1..=64).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let started = tokio::time::Instant::now();
        let mut response = next.run(req).await;
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "served"
        );
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
    .instrument(span)
    .await
}

/// Names a rejection made by a layer (handlers mark their own; see
/// `errors.rs`), for the counters.
pub(crate) fn classify(response: &Response) -> Option<Rejection> {
    match response.status() {
        // Only the rate limit answers 429, only idempotency answers 409.
        StatusCode::TOO_MANY_REQUESTS => Some(Rejection::RateLimited),
        StatusCode::CONFLICT => Some(Rejection::IdempotencyConflict),
        // PALISADE: the validate layer's 400/413/415/422 count as
        // `Validation`, the idempotency layer's 422 as `IdempotencyMismatch`:
        // tell them apart by the problem `type` each layer sets.
        _ => None,
    }
}

/// The payment provider's client stack.
pub(crate) fn payment_stack(config: &Config, client: HttpClient) -> (Upstream, BreakerProbe) {
    let stack = ServiceBuilder::new()
        // PALISADE: retry (outermost) of timeouts, connect errors and 5xx,
        //   at most 2 more attempts with backoff, never of BreakerOpen: safe
        //   only because every attempt carries the same Idempotency-Key.
        // PALISADE: .layer(CircuitBreakerLayer::new().open_for(config.breaker_open))
        //   and hand out its state: BreakerProbe::new(move || map(breaker.state())).
        // PALISADE: palisade::timeout::TimeoutLayer::new(config.payment_timeout)
        //   replaces this tower timeout, which stands in for it until then.
        .layer(tower::timeout::TimeoutLayer::new(config.payment_timeout))
        .service(transport(client));
    (
        BoxCloneSyncService::new(stack),
        BreakerProbe::always_closed(),
    )
}

/// The recommendations service's client stack: no retry (a product page
/// degrades instead), a breaker so an open circuit answers at once.
pub(crate) fn recommendations_stack(
    config: &Config,
    client: HttpClient,
) -> (Upstream, BreakerProbe) {
    let stack = ServiceBuilder::new()
        // PALISADE: .layer(CircuitBreakerLayer::new().open_for(config.breaker_open))
        // PALISADE: palisade::timeout::TimeoutLayer::new(config.recommendations_timeout)
        //   replaces this tower timeout.
        .layer(tower::timeout::TimeoutLayer::new(
            config.recommendations_timeout,
        ))
        .service(transport(client));
    (
        BoxCloneSyncService::new(stack),
        BreakerProbe::always_closed(),
    )
}
