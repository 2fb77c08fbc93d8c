//! The in-process fake payment provider (`/fake/payments`) and the faults
//! `/admin/faults` injects into it and into the recommendations queries.
//!
//! The fake provider is called over real HTTP by the client in
//! `clients.rs`, like any remote provider, so timeouts, breakers and retries
//! meet real sockets. Recommendations are a query of the repository
//! (`layers::recommendations_db`): their faults slow or fail that query,
//! which holds a pool connection meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use palisade::problem::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{Currency, Money};
use crate::errors::{ApiError, FieldError};
use crate::state::AppState;
use palisade::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};

/// Longest latency `/admin/faults` accepts: ten minutes.
pub const MAX_LATENCY_MS: u64 = 600_000;

/// The faults of one downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of calls that fail with a 500, 0.0..=1.0.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fail_rate: f64,
    /// Delay before every answer, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 600_000)]
    pub latency_ms: u64,
}

/// The body of `PUT /admin/faults`; a missing part leaves that downstream's
/// faults as they are, a present part replaces them (missing fields: 0).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    pub payment: Option<FaultSpec>,
    pub recommendations: Option<FaultSpec>,
}

/// The faults in force, as `PUT /admin/faults` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FaultsView {
    pub payment: FaultSpec,
    pub recommendations: FaultSpec,
}

/// The faults in force.
#[derive(Debug, Default)]
pub struct Faults {
    payment: RwLock<FaultSpec>,
    recommendations: RwLock<FaultSpec>,
}

impl Faults {
    pub fn view(&self) -> FaultsView {
        FaultsView {
            payment: *self.payment.read().expect("faults lock"),
            recommendations: *self.recommendations.read().expect("faults lock"),
        }
    }

    pub fn apply(&self, update: FaultsUpdate) -> FaultsView {
        if let Some(p) = update.payment {
            *self.payment.write().expect("faults lock") = p;
        }
        if let Some(r) = update.recommendations {
            *self.recommendations.write().expect("faults lock") = r;
        }
        self.view()
    }
}

/// Parses a `PUT /admin/faults` body: 400 for malformed JSON, 422 (with
/// pointers) for anything out of range or unknown.
pub fn parse_update(body: &Bytes) -> Result<FaultsUpdate, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let mut errors = Vec::new();
    match value.as_object() {
        None => errors.push(FieldError::new("", "must be an object")),
        Some(obj) => {
            for (name, part) in obj {
                if name != "payment" && name != "recommendations" {
                    errors.push(FieldError::new(format!("/{name}"), "unknown field"));
                    continue;
                }
                check_spec(&format!("/{name}"), part, &mut errors);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let spec = |name: &str| {
        value.get(name).filter(|v| !v.is_null()).map(|v| FaultSpec {
            fail_rate: v.get("fail_rate").and_then(Value::as_f64).unwrap_or(0.0),
            latency_ms: v
                .get("latency_ms")
                .and_then(|ms| crate::validation::json_integer(ms, 0, MAX_LATENCY_MS))
                .unwrap_or(0),
        })
    };
    Ok(FaultsUpdate {
        payment: spec("payment"),
        recommendations: spec("recommendations"),
    })
}

fn check_spec(at: &str, part: &Value, errors: &mut Vec<FieldError>) {
    if part.is_null() {
        return;
    }
    let Some(obj) = part.as_object() else {
        errors.push(FieldError::new(at, "must be an object"));
        return;
    };
    for (name, v) in obj {
        let pointer = format!("{at}/{name}");
        match name.as_str() {
            "fail_rate" => {
                if !v.as_f64().is_some_and(|f| (0.0..=1.0).contains(&f)) {
                    errors.push(FieldError::new(pointer, "must be a number from 0.0 to 1.0"));
                }
            }
            "latency_ms" => {
                if crate::validation::json_integer(v, 0, MAX_LATENCY_MS).is_none() {
                    errors.push(FieldError::new(
                        pointer,
                        format!("must be an integer from 0 to {MAX_LATENCY_MS}"),
                    ));
                }
            }
            _ => errors.push(FieldError::new(pointer, "unknown field")),
        }
    }
}

impl FaultSpec {
    /// The injected latency.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// Whether this call fails, by the injected share.
    pub fn fails_now(&self) -> bool {
        self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate
    }
}

/// Waits the injected latency, then fails the injected share of calls.
async fn inject(spec: FaultSpec) -> Result<(), Response> {
    if spec.latency_ms > 0 {
        tokio::time::sleep(spec.latency()).await;
    }
    if spec.fails_now() {
        let problem = Problem::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail("injected fault");
        return Err(problem.into_response::<axum::body::Body>());
    }
    Ok(())
}

/// A charge request to the fake provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub amount_cents: u64,
    #[schema(min_length = 3, max_length = 3, pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

fn parse_charge(body: &[u8]) -> Result<ChargeRequest, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "",
            "must be an object",
        )]));
    };
    let mut errors = Vec::new();
    for name in obj
        .keys()
        .filter(|k| *k != "amount_cents" && *k != "currency")
    {
        let pointer = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
        errors.push(FieldError::new(pointer, "unknown field"));
    }
    let max = Money::MAX.cents();
    let amount = obj
        .get("amount_cents")
        .and_then(|v| crate::validation::json_integer(v, 0, max));
    if amount.is_none() {
        errors.push(FieldError::new(
            "/amount_cents",
            format!("must be an integer from 0 to {max}"),
        ));
    }
    let currency = obj
        .get("currency")
        .and_then(Value::as_str)
        .filter(|c| Currency::new(c).is_ok());
    if currency.is_none() {
        errors.push(FieldError::new(
            "/currency",
            "must be exactly 3 uppercase ASCII letters",
        ));
    }
    match (amount, currency) {
        (Some(amount_cents), Some(currency)) if errors.is_empty() => Ok(ChargeRequest {
            amount_cents,
            currency: currency.to_owned(),
        }),
        _ => Err(ApiError::Invalid(errors)),
    }
}

/// A charge made by the fake provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Charge {
    pub id: String,
    pub amount_cents: u64,
    pub currency: String,
    pub status: String,
}

/// The fake provider's ledger: one charge per idempotency key, like Stripe.
#[derive(Debug, Default)]
pub struct FakePayments {
    charges: Mutex<HashMap<String, Charge>>,
    attempts: AtomicU64,
}

impl FakePayments {
    /// Distinct charges made.
    pub fn charged(&self) -> u64 {
        self.charges.lock().expect("ledger lock").len() as u64
    }

    /// Every call that reached the provider, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Charges once per key; the same key again answers the first charge.
    fn charge(&self, key: &str, request: ChargeRequest) -> (bool, Charge) {
        let mut charges = self.charges.lock().expect("ledger lock");
        if let Some(existing) = charges.get(key) {
            return (false, existing.clone());
        }
        let charge = Charge {
            id: format!("pay_{}", uuid::Uuid::new_v4().simple()),
            amount_cents: request.amount_cents,
            currency: request.currency,
            status: "succeeded".to_owned(),
        };
        charges.insert(key.to_owned(), charge.clone());
        (true, charge)
    }
}

/// The fake payment provider.
#[utoipa::path(
    post,
    path = "/fake/payments",
    tag = "fakes",
    params(("Idempotency-Key" = String, Header, description = "One charge per key",
            min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$")),
    request_body = ChargeRequest,
    responses(
        (status = 201, description = "Charged", body = Charge),
        (status = 200, description = "Already charged under this key: the first charge", body = Charge),
        (status = 400, description = "Missing key or malformed JSON", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid charge", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Injected fault", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn fake_payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.fake_payments.attempts.fetch_add(1, Ordering::Relaxed);
    if let Err(response) = inject(state.faults.view().payment).await {
        return response;
    }
    let Some(key) = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| IdempotencyKey::new(v.to_str().ok()?).ok())
    else {
        return ApiError::IdempotencyKey("is required (1 to 255 visible ASCII characters)")
            .into_response();
    };
    let request = match parse_charge(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (new, charge) = state.fake_payments.charge(key.as_str(), request);
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(charge)).into_response()
}
