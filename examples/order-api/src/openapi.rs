//! `GET /openapi.json`: the OpenAPI 3.1 document, derived from the handlers'
//! `#[utoipa::path]` attributes and the body types' `ToSchema`, so the limits
//! it states are the ones the types carry.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::errors::FieldError;

/// An RFC 9457 problem, as every 4xx and 5xx of this API answers. A schema
/// only: bodies are built by `palisade::problem::Problem`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ProblemDoc {
    /// A URI reference naming the kind of problem; `about:blank` when the
    /// status says it all.
    #[schema(rename = "type")]
    type_uri: String,
    title: String,
    status: u16,
    detail: Option<String>,
    instance: Option<String>,
    /// Schema violations, on a 422.
    errors: Option<Vec<FieldError>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "palisade order API",
        description = "A demo of palisade's resilience layers: rate limit, validation, idempotency keys, timeouts, circuit breakers and bulkheads."
    ),
    paths(
        crate::routes::health,
        crate::routes::openapi_json,
        crate::routes::create_order,
        crate::routes::get_order,
        crate::routes::get_product,
        crate::routes::put_faults,
        crate::routes::get_stats,
        crate::routes::get_config,
        crate::routes::get_metrics,
        crate::faults::fake_payment,
    ),
    components(schemas(ProblemDoc, FieldError)),
    modifiers(&AdminToken),
    tags(
        (name = "orders", description = "Place and read orders"),
        (name = "products", description = "Product pages with recommendations"),
        (name = "admin", description = "Fault injection, counters and metrics (bearer token when ADMIN_TOKEN is set)"),
        (name = "fakes", description = "The in-process fake payment provider"),
        (name = "meta", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document, serialised once.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("OpenAPI document serialises")
    })
    .clone()
}
