//! The rate limit: 429 with the draft headers, one bucket per caller.

use super::*;

on_both_stores!(
    metrics_are_not_rate_limited,
    rate_limit_refuses_with_429_and_draft_headers,
    x_forwarded_for_does_not_buy_a_new_bucket,
);

async fn metrics_are_not_rate_limited(b: &Backend) {
    let app = b
        .start_with(|c| {
            c.rate_limit_per_second = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit_burst = std::num::NonZeroU32::new(2).unwrap();
        })
        .await;
    // The same caller (this client's address) spends its burst and more
    // (on real time: a slow machine may earn a token back meanwhile, so at
    // least one of the last requests is refused, not exactly two)...
    let denied = [("name", "api"), ("outcome", "denied")];
    let before = app.metrics().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/products/1").await.status);
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!((1..=2).contains(&refused), "{statuses:?}");
    // ...and is still answered by /metrics, which carries no quota.
    for _ in 0..3 {
        let r = app.send("GET", "/metrics", &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("ratelimit").is_none());
    }
    let m = app.metrics().await;
    assert_eq!(
        requests(&m, "GET", "/products/{id}", "429"),
        refused as f64,
        "{}",
        m.0
    );
    // The layer counted its denials.
    assert_eq!(
        m.value("palisade_rate_limit_decisions_total", &denied)
            - before.value("palisade_rate_limit_decisions_total", &denied),
        refused as f64,
        "{}",
        m.0
    );
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
