//! Every middleware of the demo, server side and client side, configured
//! here and nowhere else.
//!
//! Server side, per request, outermost first:
//!
//! ```text
//! every route but the fakes: request span (request id on every log line),
//!                             request metrics
//!   /orders, /orders/{id}, /products/{id}:  rate limit (one set of buckets)
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
//!    A client that hangs up does not cut an order short: the layer's
//!    default, `OnCancel::Detach`, which the demo keeps, runs the handler to
//!    completion and stores its answer, so a retry on any instance sharing
//!    the Redis replays it and the payment step runs once per key, with no
//!    help from the provider's own dedupe (the payment key is the second
//!    line of defence, the repository's unique key the third).
//!
//! With `REDIS_URL` set and Redis unreachable, the rate limit fails open
//! (its default: reads and writes keep being served, unlimited, each
//! delayed by the store's 50 ms timeout at most) and idempotency fails
//! closed (its default): `POST /orders` answers `503` within both stores'
//! timeouts (1 s for idempotency) and runs nothing, so no order is paid
//! without its duplicate protection. Both recover on their own when Redis
//! is back (see `state::Stores::connect`).
//!
//! Client side (payments), outermost first:
//!
//! ```text
//! Idempotency-Key (the same on every attempt: it is set once, outside the retry)
//!   -> retry (3 attempts, 20-200 ms full jitter, its own budget)
//!     -> circuit breaker (one outcome per attempt; its refusal ends the retries)
//!       -> timeout (per attempt)
//!         -> transport (hyper-util Client; body read; 5xx is an error)
//! ```
//!
//! 1. **The key outside the retry**: every attempt of one charge carries
//!    the same key, so the provider charges it once however many attempts
//!    reach it. The retry sends a `POST` again only because it carries a key.
//! 2. **The retry outside the breaker**: each attempt counts with the
//!    breaker, and an open breaker's refusal is never retried (it is the
//!    retry's `Verdict::Stop`: no spinning against an open circuit, no
//!    budget spent). A connect error, a timeout, a 500/502/503/504 or a
//!    408/409/425/429 (after its `Retry-After`, in seconds or as a date) is
//!    retried while the budget lasts: it starts with 20 tokens, each failure
//!    takes one, no retry may leave 10 or fewer (the tenth failure in a row
//!    is not retried) and every
//!    success earns a tenth of a token back, so retries cannot multiply a
//!    provider outage.
//! 3. **The timeout inside the breaker**: a timed-out attempt counts as a
//!    failure, and the retry sends another one.
//!
//! The repository, behind two bulkheads over its pool of `DB_POOL_SIZE`
//! connections (a query holds one while it runs):
//!
//! ```text
//! order queries (find, insert, get):  orders bulkhead -> repository
//! product pages' recommendations:     hedge -> recommendations bulkhead -> breaker -> timeout -> repository
//! ```
//!
//! The `recommendations` bulkhead lets at most `RECOMMENDATIONS_BULKHEAD`
//! (3) queries in, so slow recommendations hold at most 3 of the 10
//! connections and the `orders` bulkhead's 7 stay free for orders. It sits
//! outside the breaker, so a refusal is not counted as a failure of the
//! repository, and outside the timeout, whose budget then starts once a
//! query has its permit. A refused recommendations query degrades the page
//! (`degraded: true`), an open breaker or a timeout likewise, at once; a
//! refused order query is a `503` problem of type `overloaded` with
//! `Retry-After` (the bulkhead's 1 s). No retry: the page degrades instead.
//!
//! The hedge sits above the bulkhead: a recommendations query still running
//! after the 95th percentile of the last 10 s's latencies gets a second,
//! identical query (a read: safe to send twice), the first answer wins and
//! the other is cancelled, giving its connection back. Above the bulkhead,
//! a hedge takes a permit of its own, so hedging never lets recommendations
//! hold more than their 3 connections; a hedge the bulkhead or the breaker
//! refuses leaves the first query running. Hedges spend a budget (at most
//! about one per ten successful queries), so a slow database is not sent
//! twice the load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use http::Method;
use palisade::BoxError;
use palisade::attempt::{Budget, ErrorIsRetryable, HttpClassifier};
use palisade::bulkhead::{self, BulkheadLayer};
use palisade::circuit_breaker::{self, CircuitBreakerLayer, Handle, State};
use palisade::config::Handles;
use palisade::hedge::{self, HedgeLayer};
use palisade::idempotency::{self, IdempotencyKeyLayer, IdempotencyLayer};
use palisade::key::{ClientIp, Header, Or};
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{self, Quota, RateLimitLayer};
use palisade::retry::{self, Backoff, Jitter, RetryLayer};
use palisade::timeout::{self, TimeoutLayer};
use palisade::validate::{UnknownFields, ValidateLayer};
use tower::ServiceBuilder;
use tower::service_fn;
use tower::util::BoxCloneSyncService;

use crate::clients::{BreakerProbe, BreakerState, HttpClient, TransportError, Upstream, transport};
use crate::config::Config;
use crate::faults::Faults;
use crate::repository::{Db, DbError, Query, RepoError, Repository};
use crate::routes;
use crate::state::{AppState, Stores};
use crate::telemetry::ObserveLayer;

/// The `name` of the rate limit below, in its metrics and traces.
pub const API: &str = "api";
/// The `name` of the validate and idempotency layers of `POST /orders`,
/// and of the bulkhead of order queries.
pub const ORDERS: &str = "orders";
/// The `name` of the payment client's breaker and timeout.
pub const PAYMENT: &str = "payment";
/// The `name` of the recommendations queries' bulkhead, breaker and timeout.
pub const RECOMMENDATIONS: &str = "recommendations";

/// Largest `POST /orders` body: 64 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long an order's idempotency record is kept.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long an order's key stays claimed without a sign of life from the
/// instance running it. A heartbeat renews the claim while the order runs,
/// however slow the payment; the lease only says how long an instance cut
/// off from Redis (an outage, a pause) keeps its orders before a retry may
/// take one over and pay again. Longer than the layer's default (10 s),
/// since a second payment run is worse here than a key that answers `409`
/// for up to a minute after its instance crashed.
pub(crate) const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(60);
/// Attempts of one payment: the first and two retries.
pub(crate) const PAYMENT_ATTEMPTS: NonZeroU32 = NonZeroU32::new(3).unwrap();

/// Who is calling: `X-Api-Key`, else the peer IP from axum's `ConnectInfo`
/// (`X-Forwarded-For` is ignored: no proxy is trusted). Rate limits and
/// idempotency keys are scoped by it.
pub(crate) type CallerKey = Or<Header, ClientIp>;

/// The caller key extractor; see [`CallerKey`]. Built once: the handler
/// of `POST /orders` uses it on every order.
pub(crate) fn caller_key() -> &'static CallerKey {
    static KEY: LazyLock<CallerKey> = LazyLock::new(|| {
        Header::api_key().or(ClientIp::new().peer(|ext| {
            ext.get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip())
        }))
    });
    &KEY
}

/// `/orders`, `/orders/{id}` and `/products/{id}` with their layers, over
/// the stores the configuration asks for (memory, or Redis with `REDIS_URL`).
pub(crate) fn api_routes(state: &AppState) -> Router<AppState> {
    let config = &state.config;
    let quota = Quota::per_second(config.rate_limit_per_second).burst(config.rate_limit_burst);
    match &state.stores {
        Stores::Memory => api_routes_with(
            state,
            RateLimitLayer::new(quota),
            IdempotencyLayer::with_store(idempotency::MemoryStore::with_max_keys(
                config.idempotency_max_keys,
            )),
        ),
        Stores::Redis(conn) => api_routes_with(
            state,
            RateLimitLayer::with_store(rate_limit::RedisStore::new(conn.clone()), quota),
            IdempotencyLayer::with_store(idempotency::RedisStore::new(conn.clone())),
        ),
    }
}

/// The tier of a caller: an API key that starts with `pro_` is on the pro
/// plan (where a real service would look the key's account up).
fn plan<B>(req: &http::Request<B>) -> Option<&str> {
    let key = req.headers().get("x-api-key")?.to_str().ok()?;
    key.starts_with("pro_").then_some("pro")
}

fn api_routes_with<RS, IS>(
    state: &AppState,
    rate_limit: RateLimitLayer<RS>,
    idempotency: IdempotencyLayer<IS>,
) -> Router<AppState>
where
    RS: rate_limit::Store,
    IS: idempotency::Store,
{
    // (3, innermost) Idempotency, scoped per caller, kept 24 h. No
    // `on_cancel`: the default detaches a hung-up request, which is what a
    // payment needs (see the module docs).
    let idempotency = idempotency
        .name("orders")
        .per(caller_key().clone())
        .ttl(IDEMPOTENCY_TTL)
        .lease(IDEMPOTENCY_LEASE)
        .body_limit(MAX_BODY_BYTES);
    // (2) Validation: 415 unless JSON, 413 past 64 KiB, 400 malformed, 422
    // with pointers. Unknown fields are refused by `CreateOrder` itself
    // (`deny_unknown_fields`, also stated in the OpenAPI document), which
    // is cheaper than the layer listing every one.
    let validate = ValidateLayer::new()
        .name("orders")
        .body_limit(MAX_BODY_BYTES)
        .unknown_fields(UnknownFields::Allow)
        .json::<routes::CreateOrder>();
    // (1, outermost) Rate limit: allowed responses carry `RateLimit`,
    // refusals are 429 with `Retry-After` and `RateLimit-Policy`. Clones of
    // the layer share its store, so a caller has one bucket for /orders and
    // /products.
    // Pro callers get ten times the quota (a config file may change both).
    let pro = Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
        .burst(NonZeroU32::new(200).expect("non-zero"));
    let rate_limit = rate_limit
        .name("api")
        .tier("pro", [pro])
        .tier_of(plan::<axum::body::Body>)
        .per(caller_key().clone())
        .http_headers();
    let quotas = rate_limit.handle();
    state.register(|h| h.rate_limit(API, quotas.clone()));
    let _ = state.api_quotas.set(quotas);
    // One `ProblemLayer` per route, outermost: each layer's error holds the
    // error of the layer inside it (`rate_limit::Error<validate::Error<..>>`),
    // and the outer one answers with the problem of whichever refused.
    // One `layer` call per route: axum boxes (and clones per request) the
    // service at every `layer` call, so the whole stack goes in at once.
    let create = post(routes::create_order).layer::<_, Infallible>(
        ServiceBuilder::new()
            .layer(ProblemLayer::new())
            .layer(rate_limit.clone())
            .layer(validate)
            .layer(idempotency),
    );
    let limited = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(rate_limit);
    Router::new()
        .route("/orders", create)
        .route(
            "/orders/{id}",
            get(routes::get_order).layer::<_, Infallible>(limited.clone()),
        )
        .route(
            "/products/{id}",
            get(routes::get_product).layer::<_, Infallible>(limited),
        )
}

/// Around every route but the fakes: the request span and the request
/// metrics of `/metrics` (see [`ObserveLayer`]). The fake downstreams stand for remote services: their
/// calls are not requests of this API.
pub(crate) fn outermost(router: Router<AppState>) -> Router<AppState> {
    router.layer(ObserveLayer::new())
}

/// The error at the top of a client stack, before boxing.
pub(crate) type StackError = circuit_breaker::Error<timeout::Error<TransportError>>;

fn probe(handle: Handle) -> BreakerProbe {
    BreakerProbe::new(move || match handle.state() {
        State::Open | State::ForcedOpen => BreakerState::Open,
        State::HalfOpen => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    })
}

/// The payment provider's client stack.
pub(crate) fn payment_stack(
    config: &Config,
    client: HttpClient,
) -> (Upstream, BreakerProbe, Handles) {
    // Opens after 5 failed attempts in a row, for BREAKER_OPEN_MS.
    let breaker = CircuitBreakerLayer::new(
        circuit_breaker::Config::new()
            .open_wait(config.breaker_open)
            .name("payment"),
    );
    let handle = breaker.handle();
    let timeout = TimeoutLayer::new(config.payment_timeout).name(PAYMENT);
    // What a config file may change: `[circuit_breaker.payment]`,
    // `[timeout.payment]`.
    let handles = Handles::new()
        .circuit_breaker(PAYMENT, handle.clone())
        .timeout(PAYMENT, timeout.handle());
    // Retries a keyed charge after a transport error, a timeout or a 5xx
    // (or a 408/409/425/429, after its Retry-After): an open breaker is never
    // retried. Its own budget: retries stop after 10 failures in a row, and
    // successes earn them back (one retry per 10).
    let retry = RetryLayer::new(HttpClassifier::new())
        .max_attempts(PAYMENT_ATTEMPTS)
        .backoff(
            Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200))
                .expect("20 ms <= 200 ms")
                .jitter(Jitter::Full),
        )
        .budget(Budget::new(NonZeroU32::new(20).expect("non-zero"), 0.1).expect("in range"))
        .name(PAYMENT);
    let stack = ServiceBuilder::new()
        // The retry's own timeout (a request whose deadline passed) is a
        // timeout like the attempts': 504.
        .map_err(|e: retry::Error<StackError>| match e {
            retry::Error::Inner(e) => BoxError::from(e),
            retry::Error::Elapsed { budget } => {
                BoxError::from(StackError::Inner(timeout::Error::Elapsed { budget }))
            }
            other => BoxError::from(other),
        })
        // The key is set here, once: every attempt below carries it, and the
        // provider charges a key once, so retrying a charge is safe (the
        // retry sends a POST again only when it carries a key).
        .layer(IdempotencyKeyLayer::new().methods([Method::POST]))
        .layer(retry)
        .layer(breaker)
        .layer(timeout)
        .service(transport(client));
    (Upstream::new(stack), probe(handle), handles)
}

/// The repository as order queries reach it: behind the `orders` bulkhead
/// (`ORDERS_BULKHEAD` queries in flight, `ORDERS_QUEUE` waiting).
pub(crate) fn orders_db(config: &Config, repository: Repository) -> (Db, bulkhead::Handle) {
    let mut bulkhead = BulkheadLayer::new(config.orders_bulkhead).name(ORDERS);
    let handle = bulkhead.handle();
    if let Some(queue) = config.orders_queue {
        bulkhead = bulkhead.queue(queue);
    }
    let stack = ServiceBuilder::new()
        .map_err(db_error)
        .layer(bulkhead)
        .service(service_fn(move |query: Query| {
            let repository = repository.clone();
            async move { repository.run(query).await }
        }));
    (Db::new(BoxCloneSyncService::new(stack)), handle)
}

/// The repository as recommendations queries reach it: the
/// `recommendations` bulkhead (`RECOMMENDATIONS_BULKHEAD` in flight,
/// `RECOMMENDATIONS_QUEUE` waiting), then a breaker (opens after 5 failures
/// in a row, for `BREAKER_OPEN_MS`) and a timeout
/// (`RECOMMENDATIONS_TIMEOUT_MS`; a query cut short gives its connection
/// back). The recommendations faults of `/admin/faults` slow the query
/// (holding its connection) or fail it.
pub(crate) fn recommendations_db(
    config: &Config,
    repository: Repository,
    faults: Arc<Faults>,
) -> (Db, BreakerProbe, bulkhead::Handle) {
    let mut bulkhead = BulkheadLayer::new(config.recommendations_bulkhead).name(RECOMMENDATIONS);
    let bulkhead_handle = bulkhead.handle();
    if let Some(queue) = config.recommendations_queue {
        bulkhead = bulkhead.queue(queue);
    }
    let breaker = CircuitBreakerLayer::new(
        circuit_breaker::Config::new()
            .open_wait(config.breaker_open)
            .name(RECOMMENDATIONS),
    );
    let handle = breaker.handle();
    let query = service_fn(move |query: Query| {
        let repository = repository.clone();
        let fault = faults.view().recommendations;
        async move {
            let query = match query {
                Query::Recommended { product, .. } => Query::Recommended {
                    product,
                    latency: fault.latency(),
                },
                other => other,
            };
            let rows = repository.run(query).await?;
            if fault.fails_now() {
                return Err(RepoError::Injected);
            }
            Ok(rows)
        }
    });
    // A query slower than 95% of the last 10 s gets a second one, within
    // the default budget (hedges stay under a tenth of successful queries).
    let hedge = HedgeLayer::new(ErrorIsRetryable).name(RECOMMENDATIONS);
    let stack = ServiceBuilder::new()
        .map_err(|e: hedge::Error<_>| match e {
            hedge::Error::Inner(e) => db_error(e),
            other => DbError::Unavailable(other.to_string().into()),
        })
        .layer(hedge)
        .layer(bulkhead)
        .layer(breaker)
        .layer(TimeoutLayer::new(config.recommendations_timeout).name(RECOMMENDATIONS))
        .service(query);
    (
        Db::new(BoxCloneSyncService::new(stack)),
        probe(handle),
        bulkhead_handle,
    )
}

/// A bulkhead's refusal stays typed (the `503` of an order); a repository
/// error too; whatever else a layer answered (a timeout, an open circuit,
/// a store failure) is the repository being unavailable.
fn db_error<E>(error: bulkhead::Error<E>) -> DbError
where
    E: Into<BoxError> + std::fmt::Display,
{
    match error {
        bulkhead::Error::Shed(shed) => DbError::Overloaded(shed),
        bulkhead::Error::Inner(inner) => match inner.into().downcast::<RepoError>() {
            Ok(repo) => DbError::Repo(*repo),
            Err(other) => DbError::Unavailable(other),
        },
        other => DbError::Unavailable(other.to_string().into()),
    }
}
