//! Hostile JSON: deep nesting, invalid UTF-8, overflowing numbers, -0, very
//! long strings. A 400 or a 422, never a panic, a stack overflow or
//! unbounded memory. (Test threads have a 2 MiB stack, as tokio workers do.)

use http::StatusCode;
use palisade::problem::IntoProblem;
use palisade::problem::types;
use palisade::validate::{Error, Validate, ValidateLayer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::*;

#[derive(Debug, Clone, Deserialize)]
struct Doc {
    #[allow(dead_code)]
    data: Value,
}
impl Validate for Doc {}

/// A recursive type, so every level goes through the derive and the
/// path-tracking wrappers.
#[derive(Debug, Clone, Deserialize)]
struct Tree {
    #[allow(dead_code)]
    children: Vec<Tree>,
}
impl Validate for Tree {}

fn problem<T>(result: Result<T, Error<std::convert::Infallible>>) -> (StatusCode, Value) {
    let problem = result.err().expect("rejected").into_problem();
    (
        problem.status(),
        serde_json::from_slice(&problem.to_json()).unwrap(),
    )
}

fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn ten_thousand_nested_arrays_are_400_or_422() {
    let deep = nested_arrays(10_000);
    // Where the type reads deep enough, serde_json's recursion limit stops it.
    let (status, body) = problem(
        ValidateLayer::new()
            .json::<Doc>()
            .parse(format!(r#"{{"data": {deep}}}"#).as_bytes()),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({
            "type": types::MALFORMED_JSON, "title": "Malformed JSON", "status": 400,
            "detail": "malformed JSON: recursion limit exceeded at line 1 column 136",
            "line": 1, "column": 136,
        })
    );
    let (status, _) = problem(ValidateLayer::new().json::<Doc>().parse(deep.as_bytes()));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An order is read from an array too (serde reads structs from
    // sequences), so the first element is a customer that is not a string:
    // the nesting is valid JSON and never read further.
    let a = send_json(
        ValidateLayer::new().json::<Order>(),
        json_request(deep.clone()),
    )
    .await;
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "1 invalid value",
            "errors": [{"pointer": "/0", "detail": "must be a string", "code": "type"}],
        })
    );
    // 10,000 nested objects under an unknown field: 400, not a deep ignore.
    let objects = format!(
        "{{\"customer\": \"a\", \"items\": [], \"x\": {}1{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(objects)).await;
    assert!(
        a.status == StatusCode::BAD_REQUEST || a.status == StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        a.status
    );
    let (status, _) = problem(
        ValidateLayer::new().json::<Tree>().parse(
            nested_arrays(10_000)
                .replace('[', r#"{"children":["#)
                .replace(']', "]}")
                .as_bytes(),
        ),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn serde_json_recursion_limit_is_128() {
    let layer = ValidateLayer::new().json::<Doc>();
    // 127 levels parse and the 128th fails: the object is one level, so 126
    // arrays inside fit and 127 do not.
    assert!(serde_json::from_str::<Value>(&nested_arrays(127)).is_ok());
    assert!(serde_json::from_str::<Value>(&nested_arrays(128)).is_err());
    assert!(
        layer
            .parse(format!(r#"{{"data": {}}}"#, nested_arrays(126)).as_bytes())
            .is_ok()
    );
    let (status, _) =
        problem(layer.parse(format!(r#"{{"data": {}}}"#, nested_arrays(127)).as_bytes()));
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same holds for a recursive type, through every wrapper.
    fn tree(depth: usize) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str(r#"{"children": ["#);
        }
        s.push_str(r#"{"children": []}"#);
        for _ in 0..depth {
            s.push_str("]}");
        }
        s
    }
    let layer = ValidateLayer::new().json::<Tree>();
    // 2 levels a node, plus the leaf's object and array: 126 fit, 128 do not.
    assert!(layer.parse(tree(62).as_bytes()).is_ok());
    let (status, body) = problem(layer.parse(tree(63).as_bytes()));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"].as_str().unwrap().split(" at ").next(),
        Some("malformed JSON: recursion limit exceeded")
    );
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let mut inside = br#"{"customer": "a"#.to_vec();
    inside.extend_from_slice(&[0xff, 0xfe]);
    inside.extend_from_slice(br#"", "items": []}"#);
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(inside)).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::MALFORMED_JSON, "title": "Malformed JSON", "status": 400,
            "detail": "malformed JSON: invalid unicode code point at line 1 column 16",
            "line": 1, "column": 16,
        })
    );
    let a = send_json(
        ValidateLayer::new().json::<Order>(),
        json_request(&b"\xc3\x28"[..]),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body["detail"],
        "malformed JSON: expected value at line 1 column 1"
    );
    // A lone surrogate escape is not a character either.
    let a = send_json(
        ValidateLayer::new().json::<Order>(),
        json_request(r#"{"customer": "\ud800", "items": []}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn numbers_that_overflow_are_422_at_their_pointer() {
    let body = r#"{"customer": "a", "items": [{"sku": "A", "quantity": 1e400, "price": {"minor": 1, "currency": "EUR"}}]}"#;
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "1 invalid value",
            "errors": [{"pointer": "/items/0/quantity", "detail": "is out of range", "code": "range"}],
        })
    );
    let a = send_json(
        ValidateLayer::new().json::<Order>(),
        json_request(r#"{"customer": "a", "items": [], "discount": -1e400}"#),
    )
    .await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/discount", "detail": "is out of range", "code": "range"}])
    );
    let (status, body) = problem(
        ValidateLayer::new()
            .json::<Doc>()
            .parse(br#"{"data": {"x": [1e400]}}"#),
    );
    assert_eq!(
        (status, &body["errors"][0]["pointer"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("/data/x/0"))
    );
    // Past u32 but a valid integer: a range violation in our words.
    let body = r#"{"customer": "a", "items": [{"sku": "A", "quantity": 4294967296, "price": {"minor": 1, "currency": "EUR"}}]}"#;
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/items/0/quantity", "detail": "must be an integer from 0 to 4294967295", "code": "range"}])
    );
    // Past u64: serde_json reads it as a float.
    let body = r#"{"customer": "a", "items": [{"sku": "A", "quantity": 99999999999999999999999, "price": {"minor": 1, "currency": "EUR"}}]}"#;
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/items/0/quantity", "detail": "must be an integer from 0 to 4294967295", "code": "type"}])
    );
}

#[tokio::test]
async fn negative_zero_is_a_float_so_integers_refuse_it_and_percent_takes_it() {
    let body = r#"{"customer": "a", "items": [{"sku": "A", "quantity": -0, "price": {"minor": 1, "currency": "EUR"}}]}"#;
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/items/0/quantity", "detail": "must be an integer from 0 to 4294967295", "code": "type"}])
    );
    // serde_json reads -0 as the float -0.0, so a signed integer refuses it too.
    let (status, body) = problem(ValidateLayer::new().json::<Order>().parse(
        br#"{"customer": "a", "items": [{"sku": "A", "quantity": 1, "price": {"minor": -0, "currency": "EUR"}}]}"#,
    ));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["pointer"], "/items/0/price/minor");
    let order = ValidateLayer::new().json::<Order>().parse(
        br#"{"customer": "a", "items": [{"sku": "A", "quantity": 1, "price": {"minor": 0, "currency": "EUR"}}], "discount": -0}"#,
    );
    let discount = order.unwrap().discount.unwrap().get();
    assert_eq!(discount, 0.0);
}

#[tokio::test]
async fn very_long_strings_are_422_without_echo_or_413_past_the_limit() {
    let long = "x".repeat(900_000);
    let body = format!(
        r#"{{"customer": "{long}", "items": [{{"sku": "A", "quantity": 1, "price": {{"minor": 1, "currency": "EUR"}}}}]}}"#
    );
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "1 invalid value",
            "errors": [{"pointer": "/customer", "detail": "must have between 1 and 64 characters", "code": "length"}],
        })
    );
    // A long unknown key is reported by pointer (the key is structure, not a value).
    let body =
        format!(r#"{{"customer": "{long}", "items": []}}"#).replace("customer", &"k".repeat(10));
    let a = send_json(ValidateLayer::new().json::<Order>(), json_request(body)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.body.to_string().len() < 1000);
    let long = "x".repeat(2 * 1024 * 1024);
    let a = send_json(
        ValidateLayer::new().json::<Order>(),
        json_request(format!(r#"{{"customer": "{long}"}}"#)),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}
