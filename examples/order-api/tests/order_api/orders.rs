//! Placing and reading orders, the routes around them, shutdown.

use super::*;

on_both_stores!(
    health_answers_ok,
    creates_an_order_with_location_and_the_exact_body,
    discount_defaults_to_zero_and_largest_order_does_not_overflow,
    gets_an_order_or_404,
    unknown_routes_and_methods_answer_problems,
    openapi_document_lists_every_route_with_limits_and_errors,
    shutdown_finishes_requests_in_flight_then_stops,
);

async fn health_answers_ok(b: &Backend) {
    let app = b.start().await;
    let r = app.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["orders_store"], "memory");
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
        ("/admin/config", "get"),
        ("/fake/payments", "post"),
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
