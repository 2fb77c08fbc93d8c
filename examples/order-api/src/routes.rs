//! The API: routes, handlers and the JSON they exchange.
//!
//! [`app`] assembles the router; the palisade layers around the routes are
//! configured in `layers.rs`, not here.

use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clients::BreakerState;
use crate::domain::{
    Currency, DomainError, Identifier, LineItem, MAX_ITEMS, MAX_UNIT_PRICE_CENTS, NewOrder, Order,
    Percent, Quantity,
};
use crate::errors::{ApiError, FieldError};
use crate::faults::{self, FaultsView};
use crate::layers;
use crate::openapi::ProblemDoc;
use crate::repository::{Backend, DbError, PoolStats};
use crate::service::{Placed, ServiceError};
use crate::state::{AppState, RejectionCounts};
use crate::validation;
use palisade::idempotency::{IDEMPOTENT_REPLAYED, IdempotencyKey};
use palisade::key::CallerKey;
use palisade::validate::{Validate, Validated, Violations, rules};

/// Products `1..=PRODUCT_COUNT` exist.
pub const PRODUCT_COUNT: u32 = 100;

/// The whole application.
pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/admin/faults", axum::routing::put(put_faults))
        .route("/admin/stats", get(get_stats))
        .route("/admin/config", get(get_config))
        .route("/metrics", get(get_metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let router = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .merge(layers::api_routes(&state))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // The fake is added after the outermost layers, so it skips them.
    layers::outermost(router)
        .route("/fake/payments", axum::routing::post(faults::fake_payment))
        .with_state(state)
}

// ---- bodies -------------------------------------------------------------

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `"ok"` when the process answers.
    #[schema(example = "ok")]
    pub status: String,
    /// Where orders are stored: `memory` or `postgres`.
    pub orders_store: String,
}

/// A new order. Checked by the validate layer (`layers.rs`) before the
/// handler runs: the domain types refuse bad values as they are
/// deserialized, and [`Validate`] checks what no single type can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub customer_id: Identifier,
    /// ISO 4217 code.
    #[schema(
        value_type = String,
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$",
        example = "EUR"
    )]
    pub currency: Currency,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderItem>,
    /// Defaults to 0.
    #[serde(default)]
    #[schema(value_type = Option<u8>, minimum = 0, maximum = 100)]
    pub discount_percent: Option<Percent>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub sku: Identifier,
    #[schema(value_type = u32, minimum = 1, maximum = 1000)]
    pub quantity: Quantity,
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub unit_price_cents: u64,
}

impl Validate for CreateOrder {
    fn validate(&self, v: &mut Violations) {
        v.check("items", rules::count(self.items.len(), 1..=MAX_ITEMS));
        v.each("items", &self.items);
    }
}

impl Validate for OrderItem {
    fn validate(&self, v: &mut Violations) {
        v.check(
            "unit_price_cents",
            rules::range(self.unit_price_cents, 0..=MAX_UNIT_PRICE_CENTS),
        );
    }
}

impl CreateOrder {
    /// The domain order. Validation makes this infallible in practice; the
    /// domain types check again, so nothing invalid gets past.
    pub fn into_domain(self) -> Result<NewOrder, DomainError> {
        let items = self
            .items
            .into_iter()
            .map(|i| LineItem::new(i.sku, i.quantity, i.unit_price_cents))
            .collect::<Result<Vec<_>, _>>()?;
        NewOrder::new(
            self.customer_id,
            self.currency,
            items,
            self.discount_percent.unwrap_or_default(),
        )
    }
}

/// The only status a stored order has: it is stored once paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatusDoc {
    Paid,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderResponse {
    pub id: String,
    pub customer_id: String,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub items: Vec<OrderItem>,
    #[schema(minimum = 0, maximum = 100)]
    pub discount_percent: u8,
    /// Sum of `quantity * unit_price_cents`.
    pub subtotal_cents: u64,
    /// `subtotal - subtotal * discount_percent / 100`, integer division.
    pub total_cents: u64,
    pub payment_id: String,
    pub status: OrderStatusDoc,
}

impl From<&Order> for OrderResponse {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id.clone(),
            customer_id: o.order.customer_id.as_str().to_owned(),
            currency: o.order.currency.as_str().to_owned(),
            items: o
                .order
                .items
                .iter()
                .map(|i| OrderItem {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price.cents(),
                })
                .collect(),
            discount_percent: o.order.discount.get(),
            subtotal_cents: o.subtotal.cents(),
            total_cents: o.total.cents(),
            payment_id: o.payment_id.clone(),
            status: OrderStatusDoc::Paid,
        }
    }
}

/// A product, as recommendations list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductSummary {
    #[schema(minimum = 1, maximum = 100)]
    pub id: u32,
    pub name: String,
    pub price_cents: u64,
}

/// A product page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    #[schema(minimum = 1, maximum = 100)]
    pub id: u32,
    pub name: String,
    pub price_cents: u64,
    /// Empty when the recommendations query did not answer.
    pub recommendations: Vec<ProductSummary>,
    /// `true` when the recommendations could not be read: the query failed,
    /// timed out, or was refused by its bulkhead or breaker.
    pub degraded: bool,
}

/// The catalogue: product `id` of `1..=PRODUCT_COUNT`.
pub fn product_summary(id: u32) -> ProductSummary {
    ProductSummary {
        id,
        name: format!("Product {id}"),
        price_cents: 100 + u64::from(id) * 250,
    }
}

/// `GET /admin/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Distinct charges made by this instance's fake provider.
    pub payments_charged: u64,
    /// Calls that reached this instance's fake provider, failures included.
    pub payment_attempts: u64,
    /// Payment steps this instance's `POST /orders` handler ran, whichever
    /// provider it calls: one per order key when idempotency holds, with no
    /// help from the provider's own dedupe.
    pub payment_steps: u64,
    pub breakers: Breakers,
    pub rejections: RejectionCounts,
    /// The repository's connections, in use and at their peak, in all and
    /// by kind of query.
    pub pool: PoolStats,
}

/// The state of each downstream's circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Breakers {
    pub payment: BreakerState,
    pub recommendations: BreakerState,
}

// ---- request helpers ----------------------------------------------------

/// The key an order is stored and paid under: the request's key, scoped by
/// its caller (the same key from two callers is two orders). Derived, so it
/// is header-safe and fixed-length whatever the caller's key looks like.
pub fn order_key(key: &IdempotencyKey, caller: &CallerKey) -> IdempotencyKey {
    key.derive(&format!("order:{caller}"))
}

fn order_created(order: &Order, replayed: bool) -> Response {
    let location =
        HeaderValue::from_str(&format!("/orders/{}", order.id)).expect("order ids are ASCII");
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(OrderResponse::from(order)),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

// ---- handlers -----------------------------------------------------------

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let store = match state.orders.repository().backend() {
        Backend::Memory(_) => "memory",
        Backend::Postgres(_) => "postgres",
    };
    Json(Health {
        status: "ok".to_owned(),
        orders_store: store.to_owned(),
    })
}

/// Places and pays an order.
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(
        ("Idempotency-Key" = String, Header, description = "Names this order; a retry with the same key and body answers the first result, within 24 h",
            min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$"),
        ("X-Api-Key" = Option<String>, Header, description = "Caller identity: scopes idempotency keys and the rate limit (else the client IP)"),
    ),
    request_body(content = CreateOrder, content_type = "application/json", description = "At most 64 KiB"),
    responses(
        (status = 201, description = "Placed and paid (or a replay of that answer, with `Idempotent-Replayed: true`)", body = OrderResponse,
            headers(("Location" = String, description = "/orders/{id}"), ("Idempotent-Replayed" = String, description = "`true` on a replay"), ("RateLimit" = String, description = "Quota left in this window (IETF draft-ietf-httpapi-ratelimit-headers)"))),
        (status = 400, description = "Malformed JSON, or a missing or invalid Idempotency-Key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is still in progress; retry after Retry-After", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Whole seconds"))),
        (status = 413, description = "Body larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Accept" = String, description = "The media types accepted"))),
        (status = 422, description = "Schema violation (with `errors` pointers, unknown fields included), or the key was used with a different body", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (per X-Api-Key, else client IP; shared with /products)", body = ProblemDoc, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1"), ("RateLimit" = String, description = "Quota left: r=0"), ("RateLimit-Policy" = String, description = "The quota: q (burst) per w seconds"))),
        (status = 502, description = "The payment provider failed; retry with the same key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Payment circuit open, or order storage overloaded (the `orders` bulkhead's share of the repository's connections is taken: type `overloaded`), both with Retry-After; or order or idempotency storage unavailable; retry with the same key", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Whole seconds, when the circuit is open or the storage overloaded"))),
        (status = 504, description = "The payment provider timed out; retry with the same key", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create_order(
    State(state): State<AppState>,
    Validated(request): Validated<CreateOrder>,
    key: Option<Extension<IdempotencyKey>>,
    caller: Option<Extension<CallerKey>>,
) -> Result<Response, ApiError> {
    // The layers in front checked the body and the key, hold the key (scoped
    // by caller) for this request, and left what they parsed in the
    // request's extensions. The scoped key also names the payment and the
    // repository row: the database's unique key is the last line of defence
    // if a duplicate ever got past the layer.
    let (Some(Extension(key)), Some(Extension(caller))) = (key, caller) else {
        return Err(ApiError::IdempotencyKey("is required"));
    };
    let scoped = order_key(&key, &caller);
    let order = request
        .into_domain()
        .map_err(|e| ApiError::Invalid(vec![FieldError::new("", e.to_string())]))?;
    match state.orders.place(&scoped, order).await {
        Ok(Placed::New(order)) => {
            tracing::info!(order = %order.id, total = order.total.cents(), "order placed");
            Ok(order_created(&order, false))
        }
        Ok(Placed::Existing(order)) => {
            tracing::info!(order = %order.id, "order replayed from the repository");
            Ok(order_created(&order, true))
        }
        Err(ServiceError::Payment(e)) => {
            tracing::warn!(error = %e, "payment failed");
            Err(ApiError::Payment(e))
        }
        Err(ServiceError::KeyReused) => Err(ApiError::IdempotencyMismatch),
        Err(ServiceError::Domain(e)) => {
            Err(ApiError::Invalid(vec![FieldError::new("", e.to_string())]))
        }
        Err(ServiceError::Storage(DbError::Overloaded(shed))) => {
            tracing::warn!(%shed, "order query refused by the orders bulkhead");
            Err(ApiError::Overloaded(shed))
        }
        Err(ServiceError::Storage(e)) => {
            tracing::error!(error = %e, "order storage failed");
            Err(ApiError::Storage)
        }
    }
}

/// An order.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id, as in Location")),
    responses(
        (status = 200, description = "The order", body = OrderResponse, headers(("RateLimit" = String, description = "Quota left in this window (IETF draft-ietf-httpapi-ratelimit-headers)"))),
        (status = 404, description = "No such order", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (shared with /products)", body = ProblemDoc, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1"), ("RateLimit" = String, description = "Quota left: r=0"), ("RateLimit-Policy" = String, description = "The quota: q (burst) per w seconds"))),
        (status = 503, description = "Order storage unavailable, or overloaded (type `overloaded`, with Retry-After: the `orders` bulkhead's share of the repository's connections is taken)", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Whole seconds, when overloaded"))),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, ApiError> {
    match state.orders.get(&id).await {
        Ok(Some(order)) => Ok(Json(OrderResponse::from(&order))),
        Ok(None) => Err(ApiError::NotFound("order")),
        Err(DbError::Overloaded(shed)) => Err(ApiError::Overloaded(shed)),
        Err(e) => {
            tracing::error!(error = %e, "order storage failed");
            Err(ApiError::Storage)
        }
    }
}

/// A product page, with recommendations when their query (behind the
/// `recommendations` bulkhead, breaker and timeout) answers in time.
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    params(("id" = u32, Path, description = "Product id", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The product; `degraded: true` and no recommendations when their query failed, timed out, was refused by the `recommendations` bulkhead (its share of the repository's connections taken) or its circuit is open", body = Product, headers(("RateLimit" = String, description = "Quota left in this window (IETF draft-ietf-httpapi-ratelimit-headers)"))),
        (status = 404, description = "No such product", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (shared with /orders)", body = ProblemDoc, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1"), ("RateLimit" = String, description = "Quota left: r=0"), ("RateLimit-Policy" = String, description = "The quota: q (burst) per w seconds"))),
    ))]
pub async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id = id
        .parse::<u32>()
        .ok()
        .filter(|id| (1..=PRODUCT_COUNT).contains(id))
        .ok_or(ApiError::NotFound("product"))?;
    let summary = product_summary(id);
    let (recommendations, degraded) = match state.recommendations.for_product(id).await {
        Ok(list) => (list, false),
        Err(error) => {
            tracing::warn!(%error, "recommendations unavailable; degraded answer");
            (Vec::new(), true)
        }
    };
    Ok(Json(Product {
        id,
        name: summary.name,
        price_cents: summary.price_cents,
        recommendations,
        degraded,
    }))
}

/// Sets the faults injected into the fake payment provider and the
/// recommendations queries.
#[utoipa::path(put, path = "/admin/faults", tag = "admin",
    request_body(content = crate::faults::FaultsUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The faults now in force", body = FaultsView),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token (when ADMIN_TOKEN is set)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Out of range or unknown field", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security((), ("admin_token" = [])))]
pub async fn put_faults(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<FaultsView>, ApiError> {
    let (parts, body) = req.into_parts();
    let value = validation::read_json_any_type(&parts.headers, body).await?;
    let bytes = bytes::Bytes::from(serde_json::to_vec(&value).expect("JSON value serialises"));
    let update = faults::parse_update(&bytes)?;
    let view = state.faults.apply(update);
    tracing::info!(?view, "faults set");
    Ok(Json(view))
}

/// Counters of the demo.
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    responses(
        (status = 200, description = "Charges, breaker states, rejections and the repository's connections in use", body = Stats),
        (status = 401, description = "Missing or wrong bearer token (when ADMIN_TOKEN is set)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security((), ("admin_token" = [])))]
pub async fn get_stats(State(state): State<AppState>) -> Json<Stats> {
    Json(Stats {
        payments_charged: state.fake_payments.charged(),
        payment_attempts: state.fake_payments.attempts(),
        payment_steps: state.orders.payment_steps(),
        breakers: Breakers {
            payment: state.orders.payment().breaker(),
            recommendations: state.recommendations.breaker(),
        },
        rejections: RejectionCounts::read(state.metrics()),
        pool: state.orders.repository().pool().stats(),
    })
}

/// `GET /admin/config`: the palisade settings in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    /// The file of `ORDER_API_CONFIG`, if one is read.
    pub file: Option<String>,
    /// The file's sections as last applied (with `ORDER_API__..`
    /// overrides); `null` without a file.
    #[schema(value_type = Object)]
    pub applied: Option<serde_json::Value>,
    /// The quotas the `api` rate limit decides by now, as its
    /// `RateLimit-Policy` shows them: `default` and each tier.
    pub api_quotas: std::collections::BTreeMap<String, String>,
}

/// What palisade's layers run with now: the config file as applied, and the
/// `api` rate limit's quotas per tier. Changes with the file, without a
/// restart.
#[utoipa::path(get, path = "/admin/config", tag = "admin",
    responses(
        (status = 200, description = "The settings in force", body = ConfigView),
        (status = 401, description = "Missing or wrong bearer token (when ADMIN_TOKEN is set)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security((), ("admin_token" = [])))]
pub async fn get_config(State(state): State<AppState>) -> Json<ConfigView> {
    let mut api_quotas = std::collections::BTreeMap::new();
    if let Some(handle) = state.api_quotas.get() {
        api_quotas.insert(
            "default".to_owned(),
            handle.limits().policy_field().to_owned(),
        );
        for tier in handle.tier_names() {
            if let Some(limits) = handle.tier(&tier) {
                api_quotas.insert(tier, limits.policy_field().to_owned());
            }
        }
    }
    let reloader = state.reloader.get();
    Json(ConfigView {
        file: state
            .config
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        applied: reloader
            .and_then(|r| r.current())
            .and_then(|c| serde_json::to_value(&*c).ok()),
        api_quotas,
    })
}

/// The Prometheus text format of the recorder's metrics: palisade's layers
/// (`palisade_*`) and this API's requests (`http_server_request_duration_seconds`).
/// Not rate limited, so a scraper is never turned away by the traffic it watches.
#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "Missing or wrong bearer token (when ADMIN_TOKEN is set)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security((), ("admin_token" = [])))]
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics().render(),
    )
        .into_response()
}

/// The media type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// `ADMIN_TOKEN` set: `/admin/*` and `/metrics` need `Authorization: Bearer <token>`.
async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config.admin_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(presented.trim().as_bytes(), token.as_bytes()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so the time taken does not tell how
/// much of the token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
