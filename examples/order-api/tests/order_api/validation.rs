//! The validate layer in front of `POST /orders`: 415, 413, 400, 422.

use super::*;

on_both_stores!(
    content_type_other_than_json_is_415,
    body_over_64_kib_is_413_with_or_without_content_length,
    malformed_json_is_400,
    schema_violations_are_422_with_pointers,
    unknown_fields_are_422,
    a_request_rejected_by_validation_stores_nothing,
);

async fn content_type_other_than_json_is_415(b: &Backend) {
    let app = b.start().await;
    let body = serde_json::to_vec(&order_body(1, 1)).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("idempotency-key", "k")];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let r = app
            .send("POST", "/orders", &headers, Some(body.clone()))
            .await;
        r.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // parameters are fine
    let r = app
        .send(
            "POST",
            "/orders",
            &[
                ("idempotency-key", "k"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn body_over_64_kib_is_413_with_or_without_content_length(b: &Backend) {
    let app = b.start().await;
    let mut big = serde_json::to_vec(&order_body(1, 1)).unwrap();
    big.pop(); // drop the closing brace, pad, close: valid JSON of 64 KiB + 1
    let pad = 64 * 1024 + 1 - big.len() - ",\"p\":\"\"}".len();
    big.extend_from_slice(format!(",\"p\":\"{}\"}}", "x".repeat(pad)).as_bytes());
    assert_eq!(big.len(), 64 * 1024 + 1);
    let r = app
        .post_raw("/orders", "k", "application/json", big.clone())
        .await;
    r.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    let r = app.post_chunked("/orders", "k", big).await;
    r.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    // exactly 64 KiB is read (and refused for the unknown field, not the size)
    let mut at_limit = serde_json::to_vec(&order_body(1, 1)).unwrap();
    at_limit.pop();
    let pad = 64 * 1024 - at_limit.len() - ",\"p\":\"\"}".len();
    at_limit.extend_from_slice(format!(",\"p\":\"{}\"}}", "x".repeat(pad)).as_bytes());
    let r = app
        .post_raw("/orders", "k", "application/json", at_limit)
        .await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn malformed_json_is_400(b: &Backend) {
    let app = b.start().await;
    for body in ["{", "", "{\"customer_id\": }", "nul"] {
        let r = app
            .post_raw("/orders", "k", "application/json", body.into())
            .await;
        r.assert_problem(StatusCode::BAD_REQUEST);
    }
}

async fn schema_violations_are_422_with_pointers(b: &Backend) {
    let app = b.start().await;
    // Each value out of its range, alone, is refused at its pointer.
    let cases: [(&str, serde_json::Value); 9] = [
        ("/customer_id", json!({"customer_id": "x".repeat(65)})),
        ("/customer_id", json!({"customer_id": ""})),
        ("/currency", json!({"currency": "EURO"})),
        ("/currency", json!({"currency": "eur"})),
        ("/discount_percent", json!({"discount_percent": -1})),
        ("/discount_percent", json!({"discount_percent": 101})),
        (
            "/items/0/quantity",
            json!({"items": [{"sku": "a", "quantity": 1001, "unit_price_cents": 1}]}),
        ),
        (
            "/items/0/sku",
            json!({"items": [{"sku": "", "quantity": 1, "unit_price_cents": 1}]}),
        ),
        ("/items", json!({"items": []})),
    ];
    for (i, (pointer, patch)) in cases.into_iter().enumerate() {
        let mut body = order_body(1, 1);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post_order(&format!("k{i}"), &body).await;
        let problem = r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        let errors = problem["errors"].as_array().unwrap();
        assert_eq!(errors[0]["pointer"], pointer, "{problem}");
        assert!(errors[0]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Rules that no single type holds are all listed at once.
    let mut body = order_body(1, 100_000_001);
    body["items"] = json!([
        {"sku": "a", "quantity": 1, "unit_price_cents": 100_000_001},
        {"sku": "b", "quantity": 1, "unit_price_cents": 100_000_002},
    ]);
    let r = app.post_order("k-many", &body).await;
    let problem = r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/items/0/unit_price_cents", "/items/1/unit_price_cents"]
    );
    let too_many = vec![json!({"sku": "a", "quantity": 1, "unit_price_cents": 1}); 101];
    body["items"] = serde_json::Value::Array(too_many);
    let r = app.post_order("k-101", &body).await;
    let problem = r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["pointer"], "/items", "{problem}");
    assert_eq!(app.stats().await["payments_charged"], 0);
}

async fn unknown_fields_are_422(b: &Backend) {
    let app = b.start().await;
    let mut top = order_body(1, 1);
    top["coupon"] = json!("FREE");
    let mut nested = order_body(1, 1);
    nested["items"][0]["colour"] = json!("red");
    for (i, (body, pointer)) in [(top, "/coupon"), (nested, "/items/0/colour")]
        .into_iter()
        .enumerate()
    {
        let r = app.post_order(&format!("k{i}"), &body).await;
        let problem = r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    assert_eq!(app.stats().await["rejections"]["validation"], 2);
}

async fn a_request_rejected_by_validation_stores_nothing(b: &Backend) {
    let app = b.start().await;
    let mut bad = order_body(1, 100);
    bad["currency"] = json!("eur");
    app.post_order("fix-me", &bad)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post_order("fix-me", &order_body(1, 100)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.header("idempotent-replayed").is_none());
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["validation"], 1);
    assert_eq!(
        (
            stats["payments_charged"].clone(),
            stats["payment_attempts"].clone()
        ),
        (json!(1), json!(1))
    );
}
