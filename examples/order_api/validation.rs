//! Request checks at the API edge: media type, size, JSON syntax, schema.
//!
//! STAND-IN: this module does by hand what palisade's `validate` layer will
//! do in front of the handler (see `layers.rs`). When the layer is wired in,
//! `create_order` takes the checked [`CreateOrder`] from it and this module
//! keeps only [`read_json`] for the admin endpoint, or goes away.
//!
//! It reports every schema violation at once, each with a JSON Pointer, and
//! accepts exactly what the OpenAPI document (derived from [`CreateOrder`])
//! describes.

use axum::body::Body;
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use crate::domain::{MAX_ID_LEN, MAX_ITEMS, MAX_QUANTITY, MAX_UNIT_PRICE_CENTS};
use crate::errors::{ApiError, FieldError};
use crate::routes::{CreateOrder, OrderItem};

/// Largest request body accepted: 64 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// `application/json`, parameters (such as `charset`) allowed.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a JSON body: 415 unless JSON, 413 past [`MAX_BODY_BYTES`] (before
/// reading when `Content-Length` says so), 400 when it does not parse.
pub(crate) async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_json_any_type(headers, body).await
}

/// [`read_json`] for an operator's endpoint, where a forgotten
/// `Content-Type` (as plain `curl -d` sends) should not get in the way: the
/// body is JSON whatever the header says.
pub(crate) async fn read_json_any_type(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Err(_) => return Err(ApiError::BodyRead),
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Checks a `POST /orders` body against the schema; every violation is
/// reported, each with its pointer.
pub(crate) fn check_create_order(value: &Value) -> Result<CreateOrder, ApiError> {
    let mut errors = Vec::new();
    let Some(obj) = value.as_object() else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };
    unknown_fields(
        obj,
        "",
        &["customer_id", "currency", "items", "discount_percent"],
        &mut errors,
    );
    let customer_id = string(obj, "", "customer_id", &mut errors);
    let currency = required(obj, "", "currency", &mut errors).and_then(|v| match v.as_str() {
        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => Some(s.to_owned()),
        _ => {
            errors.push(FieldError::new(
                "/currency",
                "must be exactly 3 uppercase ASCII letters",
            ));
            None
        }
    });
    let items = required(obj, "", "items", &mut errors).and_then(|v| match v.as_array() {
        Some(list) if (1..=MAX_ITEMS).contains(&list.len()) => {
            let checked: Vec<Option<OrderItem>> = list
                .iter()
                .enumerate()
                .map(|(i, item)| check_item(i, item, &mut errors))
                .collect();
            checked.into_iter().collect::<Option<Vec<_>>>()
        }
        _ => {
            errors.push(FieldError::new(
                "/items",
                format!("must be an array of 1 to {MAX_ITEMS} items"),
            ));
            None
        }
    });
    let discount_percent = match obj.get("discount_percent") {
        None | Some(Value::Null) => Some(None),
        Some(v) => integer(v, "/discount_percent", 0, 100, &mut errors).map(|n| Some(n as u8)),
    };
    match (customer_id, currency, items, discount_percent) {
        (Some(customer_id), Some(currency), Some(items), Some(discount_percent))
            if errors.is_empty() =>
        {
            Ok(CreateOrder {
                customer_id,
                currency,
                items,
                discount_percent,
            })
        }
        _ => Err(ApiError::Invalid(errors)),
    }
}

fn check_item(index: usize, item: &Value, errors: &mut Vec<FieldError>) -> Option<OrderItem> {
    let at = format!("/items/{index}");
    let Some(obj) = item.as_object() else {
        errors.push(FieldError::new(at, "must be an object"));
        return None;
    };
    unknown_fields(obj, &at, &["sku", "quantity", "unit_price_cents"], errors);
    let sku = string(obj, &at, "sku", errors);
    let quantity = required(obj, &at, "quantity", errors).and_then(|v| {
        integer(
            v,
            &format!("{at}/quantity"),
            1,
            u64::from(MAX_QUANTITY),
            errors,
        )
    });
    let price = required(obj, &at, "unit_price_cents", errors).and_then(|v| {
        integer(
            v,
            &format!("{at}/unit_price_cents"),
            0,
            MAX_UNIT_PRICE_CENTS,
            errors,
        )
    });
    Some(OrderItem {
        sku: sku?,
        quantity: u32::try_from(quantity?).ok()?,
        unit_price_cents: price?,
    })
}

fn required<'v>(
    obj: &'v Map<String, Value>,
    at: &str,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'v Value> {
    let value = obj.get(name);
    if value.is_none() {
        errors.push(FieldError::new(format!("{at}/{name}"), "is required"));
    }
    value
}

/// A required string of 1..=64 characters.
fn string(
    obj: &Map<String, Value>,
    at: &str,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let v = required(obj, at, name, errors)?;
    match v.as_str() {
        Some(s) if (1..=MAX_ID_LEN).contains(&s.chars().count()) => Some(s.to_owned()),
        _ => {
            errors.push(FieldError::new(
                format!("{at}/{name}"),
                format!("must be a string of 1 to {MAX_ID_LEN} characters"),
            ));
            None
        }
    }
}

/// An integer in `min..=max`. A number with a zero fraction (`2.0`) is an
/// integer to JSON Schema, so it is one here too.
pub(crate) fn json_integer(v: &Value, min: u64, max: u64) -> Option<u64> {
    let n = v.as_u64().or_else(|| {
        // Exact below 2^53; larger floats are past every limit here anyway.
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9_007_199_254_740_992.0)
            .map(|f| f as u64)
    })?;
    (min..=max).contains(&n).then_some(n)
}

fn integer(
    v: &Value,
    pointer: &str,
    min: u64,
    max: u64,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    match json_integer(v, min, max) {
        Some(n) => Some(n),
        None => {
            errors.push(FieldError::new(
                pointer,
                format!("must be an integer from {min} to {max}"),
            ));
            None
        }
    }
}

fn unknown_fields(
    obj: &Map<String, Value>,
    at: &str,
    known: &[&str],
    errors: &mut Vec<FieldError>,
) {
    for name in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(FieldError::new(
            format!("{at}/{}", escape(name)),
            "unknown field",
        ));
    }
}

/// Escapes a member name for a JSON Pointer (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(value: Value) -> Vec<String> {
        match check_create_order(&value) {
            Err(ApiError::Invalid(errors)) => errors.into_iter().map(|e| e.pointer).collect(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_valid_order_with_and_without_discount() {
        let order = check_create_order(&json!({
            "customer_id": "c1", "currency": "EUR",
            "items": [{"sku": "a", "quantity": 2, "unit_price_cents": 150}],
        }))
        .unwrap();
        assert_eq!(order.discount_percent, None);
        assert_eq!(order.items[0].quantity, 2);
        let order = check_create_order(&json!({
            "customer_id": "c1", "currency": "EUR", "discount_percent": 100,
            "items": [{"sku": "a", "quantity": 1000, "unit_price_cents": 100_000_000}],
        }))
        .unwrap();
        assert_eq!(order.discount_percent, Some(100));
        let order = check_create_order(&json!({
            "customer_id": "c1", "currency": "EUR", "discount_percent": 5.0,
            "items": [{"sku": "a", "quantity": 2.0, "unit_price_cents": 0.0}],
        }))
        .unwrap();
        assert_eq!(
            (order.discount_percent, order.items[0].quantity),
            (Some(5), 2)
        );
    }

    #[test]
    fn reports_every_violation_with_its_pointer() {
        let got = pointers(json!({
            "customer_id": "", "currency": "eur", "discount_percent": 101, "extra/x": 1,
            "items": [
                {"sku": "a", "quantity": 0, "unit_price_cents": 1},
                {"sku": "b", "quantity": 1, "unit_price_cents": 100_000_001, "colour": "red"},
                {"quantity": 1.5, "unit_price_cents": -1},
                "nope",
            ],
        }));
        for expected in [
            "/extra~1x",
            "/customer_id",
            "/currency",
            "/discount_percent",
            "/items/0/quantity",
            "/items/1/unit_price_cents",
            "/items/1/colour",
            "/items/2/sku",
            "/items/2/quantity",
            "/items/2/unit_price_cents",
            "/items/3",
        ] {
            assert!(
                got.contains(&expected.to_owned()),
                "{expected} missing from {got:?}"
            );
        }
        assert_eq!(got.len(), 11, "{got:?}");
    }

    #[test]
    fn refuses_empty_and_oversized_item_lists_and_non_objects() {
        let item = json!({"sku": "a", "quantity": 1, "unit_price_cents": 1});
        let base = |items: Value| json!({"customer_id": "c", "currency": "USD", "items": items});
        assert_eq!(pointers(base(json!([]))), ["/items"]);
        assert_eq!(pointers(base(Value::Array(vec![item; 101]))), ["/items"]);
        assert_eq!(pointers(json!([1])), [""]);
        assert_eq!(pointers(json!({})), ["/customer_id", "/currency", "/items"]);
    }
}
