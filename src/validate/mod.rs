//! Fail-fast request validation: refuse bad requests at the boundary with
//! RFC 9457 problems, before a handler sees them.
//!
//! [`ValidateLayer`] checks, in order and before reading the body: required
//! headers (400), `Accept` against what the route produces (406),
//! `Content-Type` (415, with an `Accept` header listing what is accepted) and
//! `Content-Length` against the body limit (413). A body without a length is
//! cut off with a 413 as soon as it crosses the limit; no more than the limit
//! is ever buffered.
//!
//! With [`ValidateLayer::json`], the body is then parsed into a `T`
//! (serde) and checked by its [`Validate`] rules:
//!
//! - malformed JSON: 400 with the `line` and `column`;
//! - a member the target type declares, repeated in one object: 400 with its
//!   `pointer` (parsers disagree on which one counts);
//! - wrong types, missing or unknown fields (see [`UnknownFields`]), numbers
//!   out of range, broken rules: 422 with
//!   `errors: [{"pointer": "/items/0/quantity", "detail": "...", "code": "range"}]`,
//!   RFC 6901 pointers. Every rule violation is listed, up to a cap; serde
//!   stops at the first type error, so at most one of those is.
//!
//! Details never repeat the submitted value nor name Rust types: serde's
//! "invalid type: string \"x\", expected u32" becomes "must be an integer from
//! 0 to 4294967295". Nesting deeper than 128 is a 400 (serde_json's recursion
//! limit), so no body can overflow the stack.
//!
//! The handler gets the value as [`Validated<T>`] and the bytes as [`RawBody`]
//! in the request extensions (with feature `axum`, both are extractors), and the
//! same bytes as the body. Errors are [`Error`]s: put
//! [`ProblemLayer`](crate::problem::ProblemLayer) outside to answer them; each
//! problem's `type` is one of [`problem::types`](crate::problem::types)
//! (`INVALID_HEADERS`, `NOT_ACCEPTABLE`, `UNSUPPORTED_MEDIA_TYPE`,
//! `BODY_TOO_LARGE`, `BODY_READ_FAILED`, `MALFORMED_JSON`, `DUPLICATE_MEMBER`,
//! `VALIDATION_FAILED`; `INTERNAL` from the extractors on a route without the
//! layer).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use palisade::problem::ProblemLayer;
//! use palisade::validate::{rules, Validate, ValidateLayer, Validated, Violations};
//! use serde::Deserialize;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! #[derive(Clone, Deserialize)]
//! struct Order { customer: String, items: Vec<Item> }
//! #[derive(Clone, Deserialize)]
//! struct Item { sku: String, quantity: u32 }
//!
//! impl Validate for Order {
//!     fn validate(&self, v: &mut Violations) {
//!         v.check("customer", rules::length(&self.customer, 1..=64));
//!         v.check("items", rules::count(self.items.len(), 1..=50));
//!         v.each("items", &self.items);
//!     }
//! }
//! impl Validate for Item {
//!     fn validate(&self, v: &mut Violations) {
//!         v.check("sku", rules::not_blank(&self.sku));
//!         v.check("quantity", rules::range(self.quantity, 1..=100));
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(ProblemLayer::new())
//!     .layer(ValidateLayer::new().body_limit(64 * 1024).json::<Order>())
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let Validated(order) = req.extensions().get::<Validated<Order>>().cloned().unwrap();
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(format!("{} items", order.items.len()))))
//!     }));
//!
//! let bad = Request::post("/orders")
//!     .header("content-type", "application/json")
//!     .body(Full::<Bytes>::from(r#"{"customer": "ada", "items": [{"sku": "a", "quantity": 0}]}"#))
//!     .unwrap();
//! let response = svc.clone().oneshot(bad).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
//! let body: serde_json::Value =
//!     serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(body["errors"], serde_json::json!([
//!     {"pointer": "/items/0/quantity", "detail": "must be between 1 and 100", "code": "range"}
//! ]));
//! # }
//! ```
//!
//! # Metrics and tracing
//!
//! With feature `metrics`, every rejection counts in
//! `palisade_validation_rejections_total{name, status}` (`status` is the
//! answer's code: `400`, `406`, `413`, `415` or `422`). Every decision is
//! also a `tracing` event with the fields `layer = "validate"`, `name` and
//! `outcome`: `rejected` at `DEBUG` (with `status` and a short `reason`,
//! never the body nor a header's value), `accepted` at `TRACE`.
//! [`ValidateLayer::name`] sets the `name`; see [`crate::observability`] for
//! every layer's names and labels. A [`Passthrough`] layer hands the body on
//! unread, so a body without a length that crosses the limit fails later, in
//! the inner service, and is not counted here.
//!
//! # Domain types
//!
//! A value that cannot be invalid needs no rule: make the type refuse bad
//! values at construction and deserialize through that constructor
//! (`#[serde(try_from = ...)]`). A bad value is then a 422 at its pointer, with
//! the type's own error message as the detail (so that message must not
//! repeat the value), and a discount can never be NaN three calls later.
//!
//! ```
//! use palisade::validate::{Validate, ValidateLayer};
//! use serde::Deserialize;
//!
//! /// A percentage from 0 to 100.
//! #[derive(Debug, Clone, Copy, Deserialize)]
//! #[serde(try_from = "f64")]
//! pub struct Percent(f64);
//!
//! impl TryFrom<f64> for Percent {
//!     type Error = &'static str;
//!     fn try_from(value: f64) -> Result<Self, Self::Error> {
//!         if (0.0..=100.0).contains(&value) { Ok(Self(value)) } else { Err("must be between 0 and 100") }
//!     }
//! }
//!
//! /// An ISO 4217 currency code, such as `EUR`.
//! #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
//! #[serde(try_from = "String")]
//! pub struct Currency([u8; 3]);
//!
//! impl TryFrom<String> for Currency {
//!     type Error = &'static str;
//!     fn try_from(code: String) -> Result<Self, Self::Error> {
//!         match code.as_bytes() {
//!             &[a, b, c] if code.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([a, b, c])),
//!             _ => Err("must be a three-letter ISO 4217 code"),
//!         }
//!     }
//! }
//!
//! /// A non-negative amount in minor units (cents) of a currency.
//! #[derive(Debug, Clone, Copy, Deserialize)]
//! #[serde(try_from = "MoneyWire")]
//! pub struct Money { minor: u64, currency: Currency }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct MoneyWire { minor: i64, currency: Currency }
//!
//! impl TryFrom<MoneyWire> for Money {
//!     type Error = &'static str;
//!     fn try_from(w: MoneyWire) -> Result<Self, Self::Error> {
//!         let minor = u64::try_from(w.minor).map_err(|_| "must not be negative")?;
//!         Ok(Self { minor, currency: w.currency })
//!     }
//! }
//!
//! #[derive(Debug, Clone, Deserialize)]
//! struct Discount { rate: Percent, cap: Money }
//! impl Validate for Discount {}
//!
//! let layer = ValidateLayer::new().json::<Discount>();
//! let error = layer.parse(br#"{"rate": 150, "cap": {"minor": 500, "currency": "EUR"}}"#).unwrap_err();
//! let v = &error.violations().unwrap().as_slice()[0];
//! assert_eq!((v.pointer(), v.detail()), (Some("/rate"), "must be between 0 and 100"));
//!
//! let error = layer.parse(br#"{"rate": 15, "cap": {"minor": 500, "currency": "eur"}}"#).unwrap_err();
//! let v = &error.violations().unwrap().as_slice()[0];
//! assert_eq!((v.pointer(), v.detail()), (Some("/cap/currency"), "must be a three-letter ISO 4217 code"));
//!
//! let ok = layer.parse(br#"{"rate": 15, "cap": {"minor": 500, "currency": "EUR"}}"#).unwrap();
//! assert_eq!(ok.cap.currency, Currency(*b"EUR"));
//! ```

mod config;
pub mod error;
mod extract;
pub mod future;
mod ignored;
mod json;
mod layer;
mod observe;
mod pointer;
pub mod rules;
mod service;
mod violations;
mod wording;

pub use self::config::{DEFAULT_BODY_LIMIT, Json, Passthrough, UnknownFields};
pub use self::error::Error;
pub use self::extract::{RawBody, Validated};
pub use self::layer::ValidateLayer;
pub use self::service::ValidateRequest;
pub use self::violations::{
    DEFAULT_MAX_ERRORS, Invalid, Location, Validate, Violation, Violations,
};
