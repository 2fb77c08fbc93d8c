//! Failing, slow and unreachable downstreams: 502, 503, 504, degraded pages, breakers.

use super::*;

on_both_stores!(
    provider_error_is_502_and_not_stored_so_the_key_can_be_retried,
    unreachable_provider_is_502,
    provider_timeout_is_504_and_a_retry_charges_once,
    products_have_recommendations_and_unknown_ids_are_404,
    failing_recommendations_degrade_the_page,
    slow_recommendations_time_out_into_a_degraded_page,
    payment_breaker_opens_503_with_retry_after_not_stored_then_closes,
    products_answer_degraded_without_calling_while_the_breaker_is_open,
);

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
    // The timeout layer counts attempts: the first and its two retries.
    assert_eq!(app.stats().await["rejections"]["timeout"], 3);
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
