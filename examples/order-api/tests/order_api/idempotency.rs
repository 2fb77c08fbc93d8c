//! Idempotency keys: replays, mismatches, conflicts, scoping, one charge per key.

use super::*;

on_both_stores!(
    idempotency_key_missing_or_invalid_is_400,
    same_key_and_body_replays_the_first_answer_and_charges_once,
    same_key_with_a_different_body_is_422,
    concurrent_requests_with_one_key_charge_and_store_once,
    keys_are_scoped_per_caller,
    fake_provider_charges_once_per_key,
    same_key_while_the_first_runs_is_409,
);

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
