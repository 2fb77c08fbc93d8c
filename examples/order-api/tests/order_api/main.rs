//! The order API demo, driven over real HTTP: each test starts the app on a
//! loopback listener in-process and talks to it with hyper-util's client.
//!
//! The example's modules are compiled into this test crate through `#[path]`,
//! so their own unit tests run here too. Items that only the example's
//! `main` uses are unused here, hence the `dead_code` allowance.
#![cfg(feature = "full")]
#![allow(dead_code)]

#[path = "../../examples/order_api/clients.rs"]
mod clients;
#[path = "../../examples/order_api/config.rs"]
mod config;
#[path = "../../examples/order_api/domain.rs"]
mod domain;
#[path = "../../examples/order_api/errors.rs"]
mod errors;
#[path = "../../examples/order_api/faults.rs"]
mod faults;
#[path = "../../examples/order_api/layers.rs"]
mod layers;
#[path = "../../examples/order_api/openapi.rs"]
mod openapi;
#[path = "../../examples/order_api/repository.rs"]
mod repository;
#[path = "../../examples/order_api/routes.rs"]
mod routes;
#[path = "../../examples/order_api/server.rs"]
mod server;
#[path = "../../examples/order_api/service.rs"]
mod service;
#[path = "../../examples/order_api/state.rs"]
mod state;
#[path = "../../examples/order_api/telemetry.rs"]
mod telemetry;
#[path = "../../examples/order_api/validation.rs"]
mod validation;

mod exactly_once;
mod harness;
mod postgres;
#[path = "../support/proxy.rs"]
mod proxy;
#[path = "../support.rs"]
mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use harness::{Backend, TestApp, order_body};

/// Runs each contract test twice: on memory stores, and on Redis stores (a
/// private redis-server per test; skipped loudly when redis-server is
/// missing, unless `PALISADE_REQUIRE_REDIS=1`).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        on_both_stores!(@ on_memory, on_redis; $($name),*);
    };
    (@ $memory:ident, $redis:ident; $($name:ident),*) => {
        mod $memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Backend::memory()).await
                }
            )*
        }
        mod $redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(backend) = Backend::redis(stringify!($name)) else {
                        return;
                    };
                    super::$name(&backend).await
                }
            )*
        }
    };
}

on_both_stores!(
    health_answers_ok,
    every_response_carries_a_request_id_and_echoes_a_sane_one,
    creates_an_order_with_location_and_the_exact_body,
    discount_defaults_to_zero_and_largest_order_does_not_overflow,
    gets_an_order_or_404,
    content_type_other_than_json_is_415,
    body_over_64_kib_is_413_with_or_without_content_length,
    malformed_json_is_400,
    schema_violations_are_422_with_pointers,
    unknown_fields_are_422,
    idempotency_key_missing_or_invalid_is_400,
    same_key_and_body_replays_the_first_answer_and_charges_once,
    same_key_with_a_different_body_is_422,
    concurrent_requests_with_one_key_charge_and_store_once,
    keys_are_scoped_per_caller,
    a_request_rejected_by_validation_stores_nothing,
    provider_error_is_502_and_not_stored_so_the_key_can_be_retried,
    unreachable_provider_is_502,
    provider_timeout_is_504_and_a_retry_charges_once,
    products_have_recommendations_and_unknown_ids_are_404,
    failing_recommendations_degrade_the_page,
    slow_recommendations_time_out_into_a_degraded_page,
    admin_faults_apply_partially_and_refuse_bad_values,
    admin_needs_the_bearer_token_when_one_is_set,
    admin_is_open_without_a_token,
    stats_have_the_contract_shape,
    fake_provider_charges_once_per_key,
    unknown_routes_and_methods_answer_problems,
    openapi_document_lists_every_route_with_limits_and_errors,
    shutdown_finishes_requests_in_flight_then_stops,
    metrics_count_requests_by_route_and_status_and_the_layers_decisions,
    metrics_need_the_bearer_token_when_one_is_set,
    metrics_are_not_rate_limited,
);

async fn health_answers_ok(b: &Backend) {
    let app = b.start().await;
    let r = app.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["orders_store"], "memory");
}

async fn every_response_carries_a_request_id_and_echoes_a_sane_one(b: &Backend) {
    let app = b.start().await;
    let r = app.get("/health").await;
    let id = r.header("x-request-id").expect("request id");
    assert_eq!(id.len(), 32);
    let r = app
        .send("GET", "/health", &[("x-request-id", "trace-42")], None)
        .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("trace-42"));
}

async fn creates_an_order_with_location_and_the_exact_body(b: &Backend) {
    let app = b.start().await;
    let body = json!({
        "customer_id": "cust-1",
        "currency": "EUR",
        "items": [
            {"sku": "A-1", "quantity": 3, "unit_price_cents": 333},
            {"sku": "B-2", "quantity": 2, "unit_price_cents": 1},
        ],
        "discount_percent": 15,
    });
    let r = app.post_order("k-1", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let got = r.json();
    let id = got["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/orders/{id}")));
    let payment_id = got["payment_id"].as_str().unwrap();
    assert!(payment_id.starts_with("pay_"));
    // subtotal 3*333 + 2*1 = 1001; discount 1001*15/100 = 150 (integer division)
    assert_eq!(
        got,
        json!({
            "id": id,
            "customer_id": "cust-1",
            "currency": "EUR",
            "items": body["items"],
            "discount_percent": 15,
            "subtotal_cents": 1001,
            "total_cents": 851,
            "payment_id": payment_id,
            "status": "paid",
        })
    );
    assert!(r.header("idempotent-replayed").is_none());
}

async fn discount_defaults_to_zero_and_largest_order_does_not_overflow(b: &Backend) {
    let app = b.start().await;
    let r = app.post_order("small", &order_body(2, 150)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["discount_percent"], 0);
    assert_eq!(r.json()["total_cents"], 300);

    let item = json!({"sku": "max", "quantity": 1000, "unit_price_cents": 100_000_000});
    let body = json!({"customer_id": "c", "currency": "USD", "items": vec![item; 100], "discount_percent": 100});
    let r = app.post_order("big", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["subtotal_cents"], 10_000_000_000_000u64);
    assert_eq!(r.json()["total_cents"], 0);
}

async fn gets_an_order_or_404(b: &Backend) {
    let app = b.start().await;
    let created = app.post_order("k", &order_body(1, 100)).await;
    let location = created.header("location").unwrap();
    let r = app.get(&location).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, created.body, "GET answers the same representation");
    let r = app.get("/orders/ord_missing").await;
    r.assert_problem(StatusCode::NOT_FOUND);
}

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

async fn idempotency_key_missing_or_invalid_is_400(b: &Backend) {
    let app = b.start().await;
    let body = serde_json::to_vec(&order_body(1, 1)).unwrap();
    let r = app
        .send(
            "POST",
            "/orders",
            &[("content-type", "application/json")],
            Some(body.clone()),
        )
        .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space", "tab\there"] {
        let r = app
            .post_raw("/orders", key, "application/json", body.clone())
            .await;
        r.assert_problem(StatusCode::BAD_REQUEST);
    }
    let r = app
        .send(
            "POST",
            "/orders",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", "a"),
                ("idempotency-key", "b"),
            ],
            Some(body.clone()),
        )
        .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    let max = "~".repeat(255);
    let r = app
        .post_raw("/orders", &max, "application/json", body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(app.stats().await["payments_charged"], 1);
}

async fn same_key_and_body_replays_the_first_answer_and_charges_once(b: &Backend) {
    let app = b.start().await;
    let body = order_body(2, 500);
    let first = app.post_order("replay-me", &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = app.post_order("replay-me", &body).await;
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body, "same body bytes");
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(
        second.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    let stats = app.stats().await;
    assert_eq!(stats["payments_charged"], 1);
    // On Redis, the completed record expires 24 h after it was written.
    if let Some(redis) = b.redis_server() {
        let keys = redis.cli(&["--scan", "--pattern", "palisade:idem:*"]);
        let ttls: Vec<i64> = keys
            .lines()
            .filter(|k| !k.ends_with(":fence"))
            .map(|k| redis.cli(&["TTL", k]).parse().unwrap())
            .collect();
        assert_eq!(ttls.len(), 1, "one record: {keys}");
        assert!((86_000..=86_400).contains(&ttls[0]), "{ttls:?}");
    }
}

async fn same_key_with_a_different_body_is_422(b: &Backend) {
    let app = b.start().await;
    assert_eq!(
        app.post_order("k", &order_body(1, 100)).await.status,
        StatusCode::CREATED
    );
    let r = app.post_order("k", &order_body(1, 101)).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stats().await["rejections"]["idempotency_mismatch"], 1);
    assert_eq!(app.stats().await["payments_charged"], 1);
}

async fn concurrent_requests_with_one_key_charge_and_store_once(b: &Backend) {
    let app = b.start().await;
    app.set_faults(json!({"payment": {"latency_ms": 100}}))
        .await;
    let body = order_body(1, 700);
    let (a, b) = tokio::join!(app.post_order("race", &body), app.post_order("race", &body));
    // Without the idempotency layer both run; the provider and the unique
    // key keep one charge and one order. (With it, one of them is a 409.)
    for r in [&a, &b] {
        assert!(
            matches!(r.status, StatusCode::CREATED | StatusCode::CONFLICT),
            "{}",
            r.status
        );
    }
    let created: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    let ids: std::collections::HashSet<_> =
        created.iter().map(|r| r.json()["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one order");
    assert_eq!(app.stats().await["payments_charged"], 1);
}

async fn keys_are_scoped_per_caller(b: &Backend) {
    let app = b.start().await;
    let body = serde_json::to_vec(&order_body(1, 100)).unwrap();
    let send = |api_key: &'static str| {
        let body = body.clone();
        let app = &app;
        async move {
            app.send(
                "POST",
                "/orders",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "shared"),
                    ("x-api-key", api_key),
                ],
                Some(body),
            )
            .await
        }
    };
    let a = send("alice").await;
    let b = send("bob").await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert!(b.header("idempotent-replayed").is_none());
    // and from the client IP, without X-Api-Key: a third caller
    let c = app.post_order("shared", &order_body(1, 100)).await;
    assert_eq!(c.status, StatusCode::CREATED);
    assert!(c.header("idempotent-replayed").is_none());
    assert_eq!(app.stats().await["payments_charged"], 3);
    // alice again: her own first answer
    let again = send("alice").await;
    assert_eq!(again.body, a.body);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
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

async fn provider_error_is_502_and_not_stored_so_the_key_can_be_retried(b: &Backend) {
    let app = b.start().await;
    app.set_faults(json!({"payment": {"fail_rate": 1.0}})).await;
    let body = order_body(1, 900);
    let r = app.post_order("retry-502", &body).await;
    r.assert_problem(StatusCode::BAD_GATEWAY);
    app.set_faults(json!({"payment": {"fail_rate": 0.0}})).await;
    let r = app.post_order("retry-502", &body).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.header("idempotent-replayed").is_none(),
        "the 502 was not the key's answer"
    );
    let stats = app.stats().await;
    assert_eq!(stats["payments_charged"], 1);
    assert!(stats["payment_attempts"].as_u64().unwrap() >= 2);
}

async fn unreachable_provider_is_502(b: &Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pay", closed.local_addr().unwrap());
    drop(closed);
    let app = b.start_with(|c| c.payment_url = Some(url)).await;
    app.post_order("k", &order_body(1, 1))
        .await
        .assert_problem(StatusCode::BAD_GATEWAY);
}

async fn provider_timeout_is_504_and_a_retry_charges_once(b: &Backend) {
    // A real socket and a real (short) timeout: the status is asserted,
    // never how long it took.
    let app = b
        .start_with(|c| c.payment_timeout = Duration::from_millis(300))
        .await;
    app.set_faults(json!({"payment": {"latency_ms": 1000}}))
        .await;
    let body = order_body(3, 1000);
    app.post_order("slow", &body)
        .await
        .assert_problem(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(app.stats().await["rejections"]["timeout"], 1);
    app.set_faults(json!({"payment": {"latency_ms": 0}})).await;
    let r = app.post_order("slow", &body).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Whether or not the timed-out attempt went on to charge, the retry
    // carried the same payment key: one charge.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.stats().await["payments_charged"], 1);
}

async fn products_have_recommendations_and_unknown_ids_are_404(b: &Backend) {
    let app = b.start().await;
    let r = app.get("/products/100").await;
    assert_eq!(r.status, StatusCode::OK);
    let p = r.json();
    assert_eq!(
        (p["id"].clone(), p["degraded"].clone()),
        (json!(100), json!(false))
    );
    assert!(p["name"].is_string() && p["price_cents"].is_u64());
    let recs = p["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["id"], 1, "wraps around the catalogue");
    for id in ["0", "101", "abc", "-1", "4294967296"] {
        app.get(&format!("/products/{id}"))
            .await
            .assert_problem(StatusCode::NOT_FOUND);
    }
}

async fn failing_recommendations_degrade_the_page(b: &Backend) {
    let app = b.start().await;
    app.set_faults(json!({"recommendations": {"fail_rate": 1.0}}))
        .await;
    let r = app.get("/products/7").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["recommendations"], json!([]));
    assert_eq!(r.json()["degraded"], true);
    assert_eq!(r.json()["id"], 7);
}

async fn slow_recommendations_time_out_into_a_degraded_page(b: &Backend) {
    let app = b
        .start_with(|c| c.recommendations_timeout = Duration::from_millis(100))
        .await;
    app.set_faults(json!({"recommendations": {"latency_ms": 2000}}))
        .await;
    let r = app.get("/products/7").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["degraded"], true);
    assert_eq!(app.stats().await["rejections"]["timeout"], 1);
}

async fn admin_faults_apply_partially_and_refuse_bad_values(b: &Backend) {
    let app = b.start().await;
    let r = app
        .set_faults(json!({"payment": {"fail_rate": 0.25, "latency_ms": 10}}))
        .await;
    assert_eq!(
        r,
        json!({"payment": {"fail_rate": 0.25, "latency_ms": 10}, "recommendations": {"fail_rate": 0.0, "latency_ms": 0}})
    );
    let r = app
        .set_faults(json!({"recommendations": {"latency_ms": 5}}))
        .await;
    assert_eq!(
        r["payment"]["fail_rate"], 0.25,
        "a missing part is left as it is"
    );
    assert_eq!(r["recommendations"]["latency_ms"], 5);
    for bad in [
        json!({"payment": {"fail_rate": 1.5}}),
        json!({"payment": {"fail_rate": -0.1}}),
        json!({"payment": {"latency_ms": -1}}),
        json!({"payment": {"latency_ms": 600_001}}),
        json!({"payment": {"speed": 1}}),
        json!({"database": {}}),
        json!({"payment": 3}),
        json!([]),
    ] {
        let r = app.put_json("/admin/faults", &bad, &[]).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = app
        .send(
            "PUT",
            "/admin/faults",
            &[("content-type", "application/json")],
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    // any Content-Type (as `curl -d` sends) is fine for the operator
    let r = app
        .send(
            "PUT",
            "/admin/faults",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(br#"{"recommendations": {"fail_rate": 0.5}}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["recommendations"]["fail_rate"], 0.5);
    // refused updates changed nothing
    let r = app.set_faults(json!({})).await;
    assert_eq!(r["payment"]["fail_rate"], 0.25);
}

async fn admin_needs_the_bearer_token_when_one_is_set(b: &Backend) {
    let app = b
        .start_with(|c| c.admin_token = Some("s3cret".into()))
        .await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "s3cret")],
    ] {
        let r = app.send("GET", "/admin/stats", &headers, None).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        let r = app.put_json("/admin/faults", &json!({}), &headers).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
    }
    let ok = [("authorization", "Bearer s3cret")];
    assert_eq!(
        app.send("GET", "/admin/stats", &ok, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.put_json("/admin/faults", &json!({}), &ok).await.status,
        StatusCode::OK
    );
    // the rest of the API does not need it
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
}

async fn admin_is_open_without_a_token(b: &Backend) {
    let app = b.start().await;
    assert_eq!(app.get("/admin/stats").await.status, StatusCode::OK);
}

async fn stats_have_the_contract_shape(b: &Backend) {
    let app = b.start().await;
    let stats = app.stats().await;
    assert_eq!(
        stats,
        json!({
            "payments_charged": 0,
            "payment_attempts": 0,
            "payment_steps": 0,
            "breakers": {"payment": "closed", "recommendations": "closed"},
            "rejections": {
                "rate_limited": 0, "validation": 0, "idempotency_conflict": 0,
                "idempotency_mismatch": 0, "breaker_open": 0, "timeout": 0,
            },
        })
    );
}

async fn fake_provider_charges_once_per_key(b: &Backend) {
    let app = b.start().await;
    let charge = |key: &'static str| {
        let app = &app;
        async move {
            app.send(
                "POST",
                "/fake/payments",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                Some(br#"{"amount_cents": 500, "currency": "EUR"}"#.to_vec()),
            )
            .await
        }
    };
    let first = charge("p1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = charge("p1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(charge("p2").await.status, StatusCode::CREATED);
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["payments_charged"].clone(),
            stats["payment_attempts"].clone()
        ),
        (json!(2), json!(3))
    );
    let r = app
        .send("POST", "/fake/payments", &[], Some(b"{}".to_vec()))
        .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
}

async fn unknown_routes_and_methods_answer_problems(b: &Backend) {
    let app = b.start().await;
    app.get("/nowhere")
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    app.send("DELETE", "/orders", &[], None)
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    app.send("POST", "/health", &[], None)
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED);
}

async fn openapi_document_lists_every_route_with_limits_and_errors(b: &Backend) {
    let app = b.start().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/health", "get"),
        ("/openapi.json", "get"),
        ("/orders", "post"),
        ("/orders/{id}", "get"),
        ("/products/{id}", "get"),
        ("/admin/faults", "put"),
        ("/admin/stats", "get"),
        ("/fake/payments", "post"),
        ("/fake/recommendations/{id}", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let metrics = &paths["/metrics"]["get"]["responses"];
    assert!(
        metrics["200"]["content"]["text/plain; version=0.0.4; charset=utf-8"].is_object(),
        "{metrics}"
    );
    assert!(metrics["401"].is_object(), "{metrics}");
    let post = &paths["/orders"]["post"];
    for status in [
        "201", "400", "409", "413", "415", "422", "429", "502", "503", "504",
    ] {
        assert!(
            post["responses"][status].is_object(),
            "POST /orders {status} undocumented"
        );
    }
    assert!(post["responses"]["422"]["content"]["application/problem+json"].is_object());
    // The headers each refusal carries are documented with it.
    for (route, method) in [
        ("/orders", "post"),
        ("/products/{id}", "get"),
        ("/orders/{id}", "get"),
    ] {
        let responses = &paths[route][method]["responses"];
        let limited = &responses["429"]["headers"];
        for name in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
            assert!(limited[name].is_object(), "{method} {route} 429 {name}");
        }
        let allowed = if method == "post" { "201" } else { "200" };
        assert!(
            responses[allowed]["headers"]["RateLimit"].is_object(),
            "{route}"
        );
    }
    assert!(post["responses"]["409"]["headers"]["Retry-After"].is_object());
    assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
    let key = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(
        (key["in"].clone(), key["required"].clone()),
        (json!("header"), json!(true))
    );
    assert_eq!(key["schema"]["maxLength"], 255);

    let schemas = &doc["components"]["schemas"];
    let order = &schemas["CreateOrder"];
    assert_eq!(order["additionalProperties"], false);
    assert_eq!(order["properties"]["customer_id"]["maxLength"], 64);
    assert_eq!(order["properties"]["currency"]["pattern"], "^[A-Z]{3}$");
    assert_eq!(order["properties"]["items"]["maxItems"], 100);
    assert_eq!(order["properties"]["items"]["minItems"], 1);
    assert_eq!(order["properties"]["discount_percent"]["maximum"], 100);
    let required: Vec<&str> = order["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["customer_id", "currency", "items"]);
    let item = &schemas["OrderItem"];
    assert_eq!(item["additionalProperties"], false);
    assert_eq!(item["properties"]["quantity"]["minimum"], 1);
    assert_eq!(item["properties"]["quantity"]["maximum"], 1000);
    assert_eq!(
        item["properties"]["unit_price_cents"]["maximum"],
        100_000_000
    );
    assert!(schemas["ProblemDoc"]["properties"]["type"].is_object());
}

async fn shutdown_finishes_requests_in_flight_then_stops(b: &Backend) {
    let mut app = b.start().await;
    app.set_faults(json!({"payment": {"latency_ms": 300}}))
        .await;
    let in_flight = {
        let client = app.client.clone();
        let base = app.base.clone();
        tokio::spawn(async move {
            harness::post_order_with(&client, &base, "in-flight", &order_body(1, 5)).await
        })
    };
    // Wait until the order has reached the payment provider: it is in flight.
    while app.state.fake_payments.attempts() == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served = app.shutdown();
    let r = in_flight.await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the request in flight finished"
    );
    served.await.unwrap().expect("server stopped cleanly");
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "no longer accepting"
    );
}

/// `http_server_request_duration_seconds_count` of one method, route and status.
fn requests(m: &harness::Metrics, method: &str, route: &str, status: &str) -> f64 {
    m.value(
        "http_server_request_duration_seconds_count",
        &[("method", method), ("route", route), ("status", status)],
    )
}

async fn metrics_count_requests_by_route_and_status_and_the_layers_decisions(b: &Backend) {
    let app = b.start().await;
    let before = app.metrics().await;
    let r = app.post_order("metered", &order_body(1, 100)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let bad = app
        .post_raw("/orders", "metered-bad", "application/json", b"{}".to_vec())
        .await;
    bad.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    for id in ["1", "2"] {
        assert_eq!(
            app.get(&format!("/orders/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    let after = app.metrics().await;
    assert!(after.has_type("http_server_request_duration_seconds", "histogram"));
    let grew = |method, route, status, by: f64| {
        let (was, now) = (
            requests(&before, method, route, status),
            requests(&after, method, route, status),
        );
        assert!(now >= was + by, "{method} {route} {status}: {was} -> {now}");
    };
    grew("POST", "/orders", "201", 1.0);
    grew("POST", "/orders", "422", 1.0);
    // One series per route, not per path.
    grew("GET", "/orders/{id}", "404", 2.0);
    assert_eq!(
        after.value(
            "http_server_request_duration_seconds_count",
            &[("route", "/orders/1")]
        ),
        0.0
    );
    // The layers' own families, under the names the demo gives them.
    let rejected = [("name", "orders"), ("status", "422")];
    assert!(
        after.value("palisade_validation_rejections_total", &rejected)
            >= before.value("palisade_validation_rejections_total", &rejected) + 1.0,
        "{}",
        after.0
    );
    for (family, labels) in [
        (
            "palisade_timeout_calls_total",
            [("name", "payment"), ("outcome", "completed")],
        ),
        (
            "palisade_circuit_breaker_calls_total",
            [("name", "payment"), ("outcome", "success")],
        ),
        (
            "palisade_idempotency_requests_total",
            [("name", "orders"), ("outcome", "executed")],
        ),
        (
            "palisade_rate_limit_decisions_total",
            [("name", "api"), ("outcome", "allowed")],
        ),
    ] {
        assert!(
            after.value(family, &labels) >= before.value(family, &labels) + 1.0,
            "{family} {labels:?}:\n{}",
            after.0
        );
    }
}

async fn metrics_need_the_bearer_token_when_one_is_set(b: &Backend) {
    let app = b
        .start_with(|c| c.admin_token = Some("s3cret".into()))
        .await;
    for headers in [vec![], vec![("authorization", "Bearer wrong")]] {
        let r = app.send("GET", "/metrics", &headers, None).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert!(!r.text().contains("http_server_request_duration_seconds"));
    }
    let m = app
        .metrics_with(&[("authorization", "Bearer s3cret")])
        .await;
    // The two refusals above were counted, under their route.
    assert!(requests(&m, "GET", "/metrics", "401") >= 2.0, "{}", m.0);
}

async fn metrics_are_not_rate_limited(b: &Backend) {
    let app = b
        .start_with(|c| {
            c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit_burst = std::num::NonZeroU32::new(2).unwrap();
        })
        .await;
    // The same caller (this client's address) spends its burst and more...
    let denied = [("name", "api"), ("outcome", "denied")];
    let before = app.metrics().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/products/1").await.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        2,
        "{statuses:?}"
    );
    // ...and is still answered by /metrics, which carries no quota.
    for _ in 0..3 {
        let r = app.send("GET", "/metrics", &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("ratelimit").is_none());
    }
    let m = app.metrics().await;
    assert!(
        requests(&m, "GET", "/products/{id}", "429") >= 2.0,
        "{}",
        m.0
    );
    // The layer counted its denials.
    assert!(
        m.value("palisade_rate_limit_decisions_total", &denied)
            >= before.value("palisade_rate_limit_decisions_total", &denied) + 2.0,
        "{}",
        m.0
    );
}

#[tokio::test]
async fn log_lines_of_a_request_carry_its_request_id_and_no_raw_key() {
    // The app's server runs on this test's current-thread runtime, so the
    // capture records its events as well as the client's.
    let logs = support::CapturedLogs::start();
    let app = TestApp::start().await;
    // Neither key may reach any log line, at any level (TRACE: the layers
    // log every decision).
    let (api_key, idempotency_key) = ("sk_live_logged_4f1c", "idem-logged-9b2e");
    let r = app
        .send(
            "POST",
            "/orders",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", idempotency_key),
                ("x-api-key", api_key),
            ],
            Some(serde_json::to_vec(&order_body(1, 1)).unwrap()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.header("x-request-id").unwrap();
    let text = logs.text();
    for secret in [api_key, idempotency_key] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
    let span = format!("request{{id={id} method=POST path=/orders}}");
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&span)).collect();
    assert!(ours.iter().any(|l| l.contains("order placed")), "{ours:#?}");
    assert!(ours.iter().any(|l| l.contains("served")), "{ours:#?}");
}

#[tokio::test]
async fn two_instances_sharing_a_provider_charge_one_key_once() {
    let a = TestApp::start().await;
    let provider = format!("{}/fake/payments", a.base);
    let b = TestApp::start_with(|c| c.payment_url = Some(provider)).await;
    a.set_faults(json!({"payment": {"latency_ms": 50}})).await;
    let body = order_body(2, 1234);
    let (ra, rb) = tokio::join!(a.post_order("both", &body), b.post_order("both", &body));
    assert_eq!(
        (ra.status, rb.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    // Same caller, same key: the same payment key on both instances.
    assert_eq!(ra.json()["payment_id"], rb.json()["payment_id"]);
    let stats = a.stats().await;
    assert_eq!(stats["payments_charged"], 1);
    assert_eq!(stats["payment_attempts"], 2);
    let b_stats = b.stats().await;
    assert_eq!(
        b_stats["payments_charged"], 0,
        "b has no charges of its own"
    );
    // On memory stores each instance ran the order: two payment steps, one
    // charge only because the provider dedupes the payment key.
    assert_eq!(
        (&stats["payment_steps"], &b_stats["payment_steps"]),
        (&json!(1), &json!(1))
    );
}

/// `n` GETs of a product page as the caller `api_key`; the statuses.
async fn product_statuses(app: &TestApp, api_key: &str, n: usize) -> Vec<harness::Reply> {
    let mut replies = Vec::new();
    for _ in 0..n {
        replies.push(
            app.send("GET", "/products/1", &[("x-api-key", api_key)], None)
                .await,
        );
    }
    replies
}

async fn rate_limit_refuses_with_429_and_draft_headers(b: &Backend) {
    let app = b
        .start_with(|c| {
            c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit_burst = std::num::NonZeroU32::new(3).unwrap();
        })
        .await;
    // One bucket per caller across /orders and /products: two pages and an
    // order spend the burst of 3 (from the client IP, no X-Api-Key).
    for _ in 0..2 {
        let r = app.get("/products/1").await;
        assert_eq!(r.status, StatusCode::OK);
        let field = r
            .header("ratelimit")
            .expect("RateLimit on allowed responses");
        assert!(field.contains(";r="), "{field}");
    }
    let r = app.post_order("rl-1", &order_body(1, 1)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.header("ratelimit").is_some());
    let r = app.post_order("rl-2", &order_body(1, 1)).await;
    let problem = r.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert!(
        r.header("ratelimit").is_some_and(|v| v.contains(";r=0")),
        "{problem}"
    );
    let policy = r.header("ratelimit-policy").expect("RateLimit-Policy");
    assert!(policy.contains(";q=3"), "{policy}");
    app.get("/products/2")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS);
    app.get("/orders/nope")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS);
    // Not rate limited: /health. Another caller: its own bucket.
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(health.header("ratelimit").is_none());
    let other = product_statuses(&app, "other-caller", 1).await;
    assert_eq!(other[0].status, StatusCode::OK);
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["rate_limited"], 3);
    // The refused order stored nothing and charged nothing.
    assert_eq!(stats["payments_charged"], 1);
}

async fn same_key_while_the_first_runs_is_409(b: &Backend) {
    let app = b.start().await;
    app.set_faults(json!({"payment": {"latency_ms": 400}}))
        .await;
    let body = order_body(1, 250);
    let first = {
        let (client, base, body) = (app.client.clone(), app.base.clone(), body.clone());
        tokio::spawn(async move { harness::post_order_with(&client, &base, "busy", &body).await })
    };
    while app.state.fake_payments.attempts() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = app.post_order("busy", &body).await;
    second.assert_problem(StatusCode::CONFLICT);
    assert!(second.header("retry-after").is_some());
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let third = app.post_order("busy", &body).await;
    assert_eq!(third.body, first.body);
    assert_eq!(third.header("idempotent-replayed").as_deref(), Some("true"));
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["idempotency_conflict"], 1);
    assert_eq!(stats["payments_charged"], 1);
}

async fn payment_breaker_opens_503_with_retry_after_not_stored_then_closes(b: &Backend) {
    let app = b
        .start_with(|c| c.breaker_open = Duration::from_millis(400))
        .await;
    app.set_faults(json!({"payment": {"fail_rate": 1.0}})).await;
    let body = order_body(1, 4200);
    // Each order tries the provider up to 3 times; 5 failures in a row open
    // the breaker, so the first order is a 502 and the second ends on the
    // open breaker.
    app.post_order("first", &body)
        .await
        .assert_problem(StatusCode::BAD_GATEWAY);
    let r = app.post_order("open", &body).await;
    let problem = r.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{problem}");
    let stats = app.stats().await;
    assert_eq!(stats["breakers"]["payment"], "open");
    let attempts = stats["payment_attempts"].as_u64().unwrap();
    assert_eq!(attempts, 5);
    // While open: refused at once, the provider is not called.
    app.post_order("open", &body)
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    let stats = app.stats().await;
    assert_eq!(stats["payment_attempts"], attempts);
    assert!(stats["rejections"]["breaker_open"].as_u64().unwrap() >= 2);
    // The provider recovers; after the open wait a probe passes and closes
    // the breaker. The 503 was not the key's answer: the key runs now.
    app.set_faults(json!({"payment": {"fail_rate": 0.0}})).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = app.post_order("open", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(r.header("idempotent-replayed").is_none());
    let stats = app.stats().await;
    assert_eq!(stats["breakers"]["payment"], "closed");
    assert_eq!(stats["payments_charged"], 1);
}

async fn products_answer_degraded_without_calling_while_the_breaker_is_open(b: &Backend) {
    let app = b
        .start_with(|c| {
            c.recommendations_timeout = Duration::from_millis(50);
            c.breaker_open = Duration::from_secs(60);
        })
        .await;
    app.set_faults(json!({"recommendations": {"latency_ms": 1000}}))
        .await;
    for _ in 0..5 {
        let r = app.get("/products/3").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["degraded"], true);
    }
    let stats = app.stats().await;
    assert_eq!(stats["breakers"]["recommendations"], "open");
    assert_eq!(stats["rejections"]["timeout"], 5);
    // The service is healthy again, but the breaker is open for a minute:
    // pages degrade at once (counted as breaker_open, not as timeouts).
    app.set_faults(json!({"recommendations": {"latency_ms": 0}}))
        .await;
    for _ in 0..3 {
        let r = app.get("/products/4").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            (
                r.json()["degraded"].clone(),
                r.json()["recommendations"].clone()
            ),
            (json!(true), json!([]))
        );
    }
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["breaker_open"], 3);
    assert_eq!(stats["rejections"]["timeout"], 5);
}

async fn x_forwarded_for_does_not_buy_a_new_bucket(b: &Backend) {
    let app = b
        .start_with(|c| {
            c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit_burst = std::num::NonZeroU32::new(2).unwrap();
        })
        .await;
    // No proxy is trusted: the peer address counts, whatever the header says.
    for (i, forwarded) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        .into_iter()
        .enumerate()
    {
        let r = app
            .send(
                "GET",
                "/products/1",
                &[("x-forwarded-for", forwarded)],
                None,
            )
            .await;
        let expected = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(r.status, expected, "request {i}");
    }
}

on_both_stores!(@ more_on_memory, more_on_redis;
    x_forwarded_for_does_not_buy_a_new_bucket,
    rate_limit_refuses_with_429_and_draft_headers,
    same_key_while_the_first_runs_is_409,
    payment_breaker_opens_503_with_retry_after_not_stored_then_closes,
    products_answer_degraded_without_calling_while_the_breaker_is_open
);

#[tokio::test]
async fn two_instances_sharing_redis_charge_a_key_once_and_share_one_rate_limit() {
    let Some(shared) = Backend::redis("two_instances_sharing_redis") else {
        return;
    };
    let limits = |c: &mut config::Config| {
        c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
        c.rate_limit_burst = std::num::NonZeroU32::new(4).unwrap();
    };
    let a = shared.start_with(limits).await;
    let provider = format!("{}/fake/payments", a.base);
    let b = shared
        .start_with(|c| {
            limits(c);
            c.payment_url = Some(provider);
        })
        .await;
    a.set_faults(json!({"payment": {"latency_ms": 200}})).await;
    let body = order_body(2, 1234);
    let (ra, rb) = tokio::join!(a.post_order("both", &body), b.post_order("both", &body));
    // One instance runs the order; the other sees the key in flight (409)
    // or, if it came second, replays the answer.
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert!(
        statuses == [StatusCode::CREATED, StatusCode::CONFLICT]
            || statuses == [StatusCode::CREATED, StatusCode::CREATED],
        "{statuses:?}"
    );
    let stats = a.stats().await;
    assert_eq!(stats["payments_charged"], 1);
    assert_eq!(
        stats["payment_attempts"], 1,
        "the duplicate never reached the provider"
    );
    // After the first finished, both instances replay it.
    let again = b.post_order("both", &body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let created = if ra.status == StatusCode::CREATED {
        &ra
    } else {
        &rb
    };
    assert_eq!(again.body, created.body);
    // One bucket across both instances: a caller's burst of 4, spent half
    // on each, leaves nothing for a fifth request on either.
    for app in [&a, &b, &a, &b] {
        assert_eq!(
            product_statuses(app, "shared-caller", 1).await[0].status,
            StatusCode::OK
        );
    }
    for app in [&a, &b] {
        product_statuses(app, "shared-caller", 1).await[0]
            .assert_problem(StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test]
async fn two_instances_on_memory_stores_keep_separate_rate_limits() {
    // The contrast that makes the Redis test above mean something.
    let limits = |c: &mut config::Config| {
        c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
        c.rate_limit_burst = std::num::NonZeroU32::new(2).unwrap();
    };
    let a = TestApp::start_with(limits).await;
    let b = TestApp::start_with(limits).await;
    for app in [&a, &a] {
        assert_eq!(
            product_statuses(app, "caller", 1).await[0].status,
            StatusCode::OK
        );
    }
    product_statuses(&a, "caller", 1).await[0].assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        product_statuses(&b, "caller", 1).await[0].status,
        StatusCode::OK
    );
}
