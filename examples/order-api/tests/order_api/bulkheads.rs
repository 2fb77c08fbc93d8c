//! The bulkheads over the repository: slow recommendations hold at most
//! their share of the connection pool, orders keep theirs, and each
//! bulkhead's refusal answers as documented (a degraded page; a `503`
//! problem of type `overloaded` with `Retry-After`).
//!
//! In-process with `oneshot` and paused time: the fake payment provider is
//! a service of the test (no socket), so the clock moves only when every
//! task waits on it, and counts are exact.

use std::convert::Infallible;
use std::num::NonZeroU32;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use metrics::LocalRecorderGuard;
use metrics_exporter_prometheus::PrometheusRecorder;
use palisade::BoxError;
use palisade::load_shed::Queue;
use palisade::problem::types::OVERLOADED;
use serde_json::Value;
use tower::{ServiceExt, service_fn};

use order_api::clients::{BreakerProbe, BreakerState, PaymentClient, Upstream};
use order_api::config::Config;
use order_api::repository::{QueryKind, Repository};
use order_api::state::{AppState, Stores};

use super::*;

/// The demo's router and state, with a fake payment provider that charges
/// at once and in-memory stores.
struct InProcess {
    router: Router,
    state: AppState,
    _metrics: LocalRecorderGuard<'static>,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

async fn charge_at_once(
    _: http::Request<http_body_util::Full<Bytes>>,
) -> Result<Response<Bytes>, BoxError> {
    let charge =
        json!({"id": "pay_test", "amount_cents": 0, "currency": "EUR", "status": "succeeded"});
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .body(Bytes::from(charge.to_string()))?)
}

impl InProcess {
    fn start(configure: impl FnOnce(&mut Config)) -> Self {
        // A rate limit large enough never to refuse: the bulkheads are
        // under test.
        let mut config = Config {
            rate_limit_per_second: NonZeroU32::new(100_000).unwrap(),
            rate_limit_burst: NonZeroU32::new(100_000).unwrap(),
            ..Config::default()
        };
        configure(&mut config);
        let (recorder, metrics) = order_api::telemetry::recorder();
        // Leaked, as the harness does: a recorder per test, for the process.
        let recorder: &'static PrometheusRecorder = Box::leak(Box::new(recorder));
        let guard = metrics::set_default_local_recorder(recorder);
        let payment = PaymentClient::new(
            Upstream::new(service_fn(charge_at_once)),
            "http://payments.invalid/charges".to_owned(),
            BreakerProbe::new(|| BreakerState::Closed),
        );
        let state = AppState::new(
            config,
            Repository::memory(),
            payment,
            Stores::Memory,
            metrics,
            palisade::config::Handles::new(),
        );
        Self {
            router: order_api::app(state.clone()),
            state,
            _metrics: guard,
        }
    }

    fn send(&self, request: Request<Body>) -> impl Future<Output = Answer> + Send + 'static {
        let router = self.router.clone();
        async move {
            let response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.expect("body read").to_bytes();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        }
    }

    fn page(&self, id: u32) -> impl Future<Output = Answer> + Send + 'static {
        let request = Request::get(format!("/products/{id}"))
            .header("x-api-key", "shopper")
            .body(Body::empty())
            .unwrap();
        self.send(request)
    }

    fn order(&self, key: &str) -> impl Future<Output = Answer> + Send + 'static {
        let request = Request::post("/orders")
            .header("x-api-key", "buyer")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(order_body(1, 500).to_string()))
            .unwrap();
        self.send(request)
    }

    async fn set_faults(&self, faults: Value) {
        let request = Request::put("/admin/faults")
            .header("content-type", "application/json")
            .body(Body::from(faults.to_string()))
            .unwrap();
        assert_eq!(self.send(request).await.status, StatusCode::OK);
    }

    async fn stats(&self) -> Value {
        let answer = self
            .send(Request::get("/admin/stats").body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.body
    }
}

/// Lets every spawned request run as far as it can without the clock
/// moving (yielding never advances paused time).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn slow_recommendations_hold_at_most_their_share_and_orders_still_succeed() {
    // The defaults: a pool of 10, recommendations 3 (+2 queued for 50 ms),
    // orders 7, recommendations time out after 3 s.
    let app = InProcess::start(|_| {});
    app.set_faults(json!({"recommendations": {"latency_ms": 10_000}}))
        .await;
    let pages: Vec<_> = (1..=20).map(|id| tokio::spawn(app.page(id))).collect();
    settle().await;
    let stats = app.stats().await;
    assert_eq!(stats["pool"]["recommendations"]["in_use"], 3, "{stats}");

    // Meanwhile, with three slow queries holding their connections, orders
    // find theirs.
    for n in 0..5 {
        let answer = app.order(&format!("meanwhile-{n}")).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let stats = app.stats().await;
    assert_eq!(
        stats["pool"]["recommendations"]["in_use"], 3,
        "the slow queries were still running: {stats}"
    );
    assert!(
        stats["pool"]["orders"]["peak"].as_u64().unwrap() >= 1,
        "{stats}"
    );

    // Every page answers, degraded: 3 timed out holding a connection, 2
    // waited their 50 ms in the queue, 15 were refused at once.
    for page in pages {
        let page = page.await.unwrap();
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body["degraded"], true, "{}", page.body);
        assert_eq!(page.body["recommendations"], json!([]));
    }
    let stats = app.stats().await;
    assert_eq!(stats["pool"]["recommendations"]["peak"], 3, "{stats}");
    assert_eq!(stats["pool"]["recommendations"]["in_use"], 0, "{stats}");
    assert!(stats["pool"]["peak"].as_u64().unwrap() <= 10, "{stats}");
    assert_eq!(stats["rejections"]["recommendations_shed"], 17, "{stats}");
    assert_eq!(stats["rejections"]["timeout"], 3, "{stats}");
    assert_eq!(stats["rejections"]["orders_shed"], 0, "{stats}");
}

#[tokio::test(start_paused = true)]
async fn a_page_refused_by_the_recommendations_bulkhead_degrades_at_once() {
    let app = InProcess::start(|c| {
        c.recommendations_bulkhead = NonZeroU32::new(1).unwrap();
        c.recommendations_queue = None;
    });
    // Healthy: recommendations come from the catalogue query.
    let page = app.page(100).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["degraded"], false);
    let ids: Vec<_> = page.body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3], "the next three products, wrapping");

    app.set_faults(json!({"recommendations": {"latency_ms": 1_000}}))
        .await;
    let slow = tokio::spawn(app.page(7));
    settle().await;
    let started = tokio::time::Instant::now();
    let refused = app.page(8).await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "refused without waiting for the slow query"
    );
    assert_eq!(refused.status, StatusCode::OK);
    assert_eq!(
        (
            refused.body["degraded"].clone(),
            refused.body["recommendations"].clone()
        ),
        (json!(true), json!([]))
    );
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["recommendations_shed"], 1, "{stats}");
    // The slow query itself answers within the 3 s timeout, not degraded.
    let slow = slow.await.unwrap();
    assert_eq!(slow.body["degraded"], false, "{}", slow.body);
    assert_eq!(slow.body["recommendations"].as_array().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_order_refused_by_the_orders_bulkhead_is_503_overloaded_with_retry_after() {
    let app = InProcess::start(|c| {
        c.orders_bulkhead = NonZeroU32::new(2).unwrap();
        c.orders_queue = Some(Queue::new(1, Duration::from_millis(100)).unwrap());
    });
    // The database is saturated: every connection of the pool is taken.
    let pool = app.state.orders.repository().pool().clone();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(pool.acquire(QueryKind::Orders).await);
    }
    let orders: Vec<_> = (0..5)
        .map(|n| tokio::spawn(app.order(&format!("busy-{n}"))))
        .collect();
    // Two hold the bulkhead's permits (waiting for a connection), one
    // waits in its queue, two are refused at once; the queued one is
    // refused after its 100 ms.
    settle().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = orders.iter().filter(|o| o.is_finished()).count();
    assert_eq!(refused, 3);
    drop(held);
    let mut statuses = Vec::new();
    for order in orders {
        let answer = order.await.unwrap();
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(answer.body["type"], OVERLOADED, "{}", answer.body);
            assert_eq!(answer.body["status"], 503);
            assert!(answer.body["title"].is_string());
            assert_eq!(answer.headers["content-type"], "application/problem+json");
            assert_eq!(answer.headers["retry-after"], "1");
        }
        statuses.push(answer.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 503, 503, 503]);
    let stats = app.stats().await;
    assert_eq!(stats["rejections"]["orders_shed"], 3, "{stats}");
    // A refused order stored nothing: its key runs now.
    let retried = app.order("busy-0").await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
}
