//! `/admin/*`, `/metrics`, request ids and log lines.

use super::*;

on_both_stores!(
    every_response_carries_a_request_id_and_echoes_a_sane_one,
    admin_faults_apply_partially_and_refuse_bad_values,
    admin_needs_the_bearer_token_when_one_is_set,
    admin_is_open_without_a_token,
    stats_have_the_contract_shape,
    metrics_count_requests_by_route_and_status_and_the_layers_decisions,
    metrics_need_the_bearer_token_when_one_is_set,
);

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
                "orders_shed": 0, "recommendations_shed": 0,
            },
            "pool": {
                "size": 10, "in_use": 0, "peak": 0,
                "orders": {"in_use": 0, "peak": 0},
                "recommendations": {"in_use": 0, "peak": 0},
            },
        })
    );
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
