//! The layer over HTTP: shared clones, exact 429s, headers, keys, cost,
//! shadow mode and store failures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::nz;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade::key::{ClientIp, Header};
use palisade::problem::{ProblemLayer, types};
use palisade::rate_limit::{
    Decision, Error, Limits, MemoryStore, OnMissingCallerKey, OnStoreError, Quota, RateLimitLayer,
    Store, StoreError,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn app<L>(layer: L) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

fn req(api_key: Option<&str>) -> Request<Body> {
    let mut b = Request::get("/");
    if let Some(k) = api_key {
        b = b.header("x-api-key", k);
    }
    b.body(Body::empty()).unwrap()
}

async fn body(resp: Response<Body>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_clone_axum_makes_counts_against_one_limiter() {
    // tower's own RateLimit is per clone: axum clones per request, so a
    // 5/s limit let 1,500 concurrent requests through. Here 5 pass.
    let layer = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(RateLimitLayer::new(Quota::per_second(nz(5))));
    let app = app(layer);
    let tasks: Vec<_> = (0..1_500)
        .map(|_| tokio::spawn(app.clone().oneshot(req(None))))
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap().unwrap().status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, limited), (5, 1_495));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clones_on_two_threads_allow_exactly_the_burst() {
    let layer = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(RateLimitLayer::new(Quota::per_hour(nz(7))));
    let app = app(layer);
    let tasks: Vec<_> = (0..1_500)
        .map(|_| tokio::spawn(app.clone().oneshot(req(None))))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().unwrap().status() == StatusCode::OK);
    }
    assert_eq!(ok, 7);
}

#[tokio::test(start_paused = true)]
async fn the_429_body_retry_after_and_ratelimit_fields_are_exact() {
    let layer = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
        RateLimitLayer::new(Quota::per_minute(nz(2)))
            .per(Header::api_key())
            .http_headers(),
    );
    let app = app(layer);

    let first = app.clone().oneshot(req(Some("k1"))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], r#""default";q=2;w=60"#);
    assert_eq!(first.headers()["ratelimit"], r#""default";r=1;t=30"#);
    let second = app.clone().oneshot(req(Some("k1"))).await.unwrap();
    assert_eq!(second.headers()["ratelimit"], r#""default";r=0;t=60"#);

    tokio::time::advance(Duration::from_millis(10_500)).await;
    let denied = app.clone().oneshot(req(Some("k1"))).await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = denied.headers();
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(h["retry-after"], "20", "19.5 s rounds up");
    assert_eq!(h["ratelimit-policy"], r#""default";q=2;w=60"#);
    assert_eq!(h["ratelimit"], r#""default";r=0;t=50"#, "49.5 s rounds up");
    assert_eq!(
        body(denied).await,
        format!(
            r#"{{"type":"{}","title":"Rate limited","status":429,"detail":"rate limit \"default\" exceeded, retry after 20 s","retry_after":20}}"#,
            types::RATE_LIMITED
        )
    );

    // Another key is untouched; the first is allowed once its cell is back.
    assert_eq!(
        app.clone().oneshot(req(Some("k2"))).await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_millis(19_499)).await;
    assert_eq!(
        app.clone()
            .oneshot(req(Some("k1")))
            .await
            .unwrap()
            .headers()["retry-after"],
        "1",
        "1 ms left still says 1 s"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        app.clone().oneshot(req(Some("k1"))).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn several_limits_must_all_allow_and_the_binding_one_is_reported() {
    let layer = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
        RateLimitLayer::new(Quota::per_second(nz(10)))
            .quota(Quota::per_minute(nz(15)).named("minute"))
            .http_headers(),
    );
    let app = app(layer);
    for _ in 0..10 {
        assert_eq!(
            app.clone().oneshot(req(None)).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let denied = app.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["ratelimit"], r#""default";r=0;t=1"#);
    assert_eq!(
        denied.headers()["ratelimit-policy"],
        r#""default";q=10;w=1, "minute";q=15;w=60"#
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    for i in 0..5 {
        let ok = app.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "request {i}");
    }
    let denied = app.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        denied.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(r#""minute";r=0;"#),
        "{:?}",
        denied.headers()["ratelimit"]
    );
}

#[tokio::test(start_paused = true)]
async fn requests_cost_what_the_cost_function_says() {
    let cost = |r: &Request<Body>| -> u32 {
        r.headers()
            .get("x-cost")
            .map_or(1, |v| v.to_str().unwrap().parse().unwrap())
    };
    let layer = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(RateLimitLayer::new(Quota::per_hour(nz(10))).cost(cost));
    let app = app(layer);
    let costly = || {
        Request::get("/")
            .header("x-cost", "3")
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(
            app.clone().oneshot(costly()).await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.clone().oneshot(costly()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "9 spent, 1 left"
    );
    assert_eq!(
        app.clone().oneshot(req(None)).await.unwrap().status(),
        StatusCode::OK
    );
    let huge = Request::get("/")
        .header("x-cost", "11")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(huge).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "it will never fit"
    );
    let text = body(resp).await;
    assert!(text.contains(types::COST_TOO_HIGH), "{text}");
    assert!(text.contains("exceeds the largest allowed cost 10"));
}

#[tokio::test]
async fn a_request_without_a_key_is_rejected_or_counted_under_the_fallback() {
    let reject = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(RateLimitLayer::new(Quota::per_hour(nz(1))).per(Header::api_key()));
    let resp = app(reject).oneshot(req(None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = body(resp).await;
    assert!(text.contains("request has no caller key"), "{text}");
    assert!(text.contains(types::MISSING_CALLER_KEY), "{text}");

    let fallback = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
        RateLimitLayer::new(Quota::per_hour(nz(1)))
            .per(Header::api_key())
            .on_missing_caller_key(OnMissingCallerKey::Fallback("anonymous".into())),
    );
    let app = app(fallback);
    assert_eq!(
        app.clone().oneshot(req(None)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone().oneshot(req(None)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "all keyless requests share the fallback key"
    );
    assert_eq!(
        app.clone().oneshot(req(Some("k"))).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_api_key_else_the_client_ip() {
    let layer = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
        RateLimitLayer::new(Quota::per_hour(nz(1))).per(Header::api_key().or(ClientIp::new())),
    );
    let app = app(layer);
    let from = |ip: &str, key: Option<&str>| {
        let mut r = req(key);
        r.extensions_mut()
            .insert(format!("{ip}:1000").parse::<SocketAddr>().unwrap());
        r
    };
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.1", None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.1", None))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.2", None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.1", Some("192.0.2.3")))
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "an API key that looks like an IP is not that IP's bucket"
    );
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.3", None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_decides_and_logs_but_never_rejects() {
    let logs = crate::support::CapturedLogs::start();

    let layer = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
        RateLimitLayer::new(Quota::per_hour(nz(2)))
            .per(|_: &Request<Body>| Some("shadow-key".to_owned()))
            .shadow(true)
            .http_headers(),
    );
    let app = app(layer);
    for _ in 0..5 {
        let resp = app.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers().get("ratelimit").is_none(),
            "shadow mode changes no response"
        );
    }
    let logs = logs.text();
    let digest = format!("key={}", palisade::observability::redact_key("shadow-key"));
    let ours: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&digest) && l.contains("rate limited"))
        .collect();
    assert_eq!(ours.len(), 3, "{logs}");
    assert!(
        ours.iter().all(|l| l.contains("outcome=\"shadow_denied\"")),
        "{logs}"
    );
}

/// A store that fails, or never answers, for the failure policies.
#[derive(Clone)]
struct Broken {
    hang: bool,
}

impl Store for Broken {
    async fn check(&self, _: &str, _: &Limits, _: u32) -> Result<Decision, StoreError> {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Err(StoreError::Timeout(Duration::from_secs(1)));
        }
        Err(StoreError::Protocol("boom".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_open_or_closed_as_configured() {
    for hang in [false, true] {
        let open =
            ServiceBuilder::new()
                .layer(ProblemLayer::new())
                .layer(RateLimitLayer::with_store(
                    Broken { hang },
                    Quota::per_second(nz(1)),
                ));
        let resp = app(open).oneshot(req(None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "fail open");

        let closed = ServiceBuilder::new().layer(ProblemLayer::new()).layer(
            RateLimitLayer::with_store(Broken { hang }, Quota::per_second(nz(1)))
                .on_store_error(OnStoreError::FailClosed),
        );
        let resp = app(closed).oneshot(req(None)).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "fail closed"
        );
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(resp.headers()["retry-after"], "1");
        let text = body(resp).await;
        assert!(text.contains(types::STORE_UNAVAILABLE), "{text}");
        assert!(text.contains(r#""detail":"store unavailable""#), "{text}");
        assert!(
            !text.contains("boom"),
            "the cause stays out of the body: {text}"
        );
    }
}

#[tokio::test]
async fn a_store_error_says_what_failed_and_keeps_its_cause_as_the_source() {
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_store(Broken { hang: false }, Quota::per_second(nz(1)))
                .on_store_error(OnStoreError::FailClosed),
        )
        .service(service_fn(|_: ()| async { Ok::<_, Infallible>("sent") }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::Protocol(_))),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "store unavailable");
    let source = std::error::Error::source(&err).expect("the store's error");
    assert!(source.to_string().contains("boom"), "{source}");
}

#[tokio::test(start_paused = true)]
async fn client_side_stacks_get_a_typed_rate_limited() {
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::with_store(
            MemoryStore::new(),
            Quota::per_second(nz(2)).burst(nz(3)),
        ))
        .service(service_fn(|_: ()| async { Ok::<_, Infallible>("sent") }));
    for _ in 0..3 {
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "sent");
    }
    match svc.ready().await.unwrap().call(()).await {
        Err(Error::Limited(limited)) => {
            assert_eq!(limited.retry_after, Duration::from_millis(500));
            assert_eq!(limited.limit, 3);
            assert_eq!(limited.remaining, 0);
            assert_eq!(limited.policy(), "default");
            assert_eq!(limited.to_string(), "rate limited, retry after 500ms");
        }
        other => panic!("expected Limited, got {other:?}"),
    }
}

#[tokio::test]
async fn readiness_comes_from_the_inner_service_and_survives_clones() {
    let (svc, mut handle) = tower_test::mock::pair::<(), &'static str>();
    let mut svc = tower::Layer::layer(&RateLimitLayer::new(Quota::per_hour(nz(10))), svc);
    handle.allow(1);
    let ready = svc.ready().await.unwrap();
    let call = tokio::spawn(ready.call(()));
    let _clone = svc.clone();
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("done");
    assert_eq!(call.await.unwrap().unwrap(), "done");
    tokio_test::assert_pending!(tokio_test::task::spawn(svc.ready()).poll());
}

#[tokio::test(start_paused = true)]
async fn a_denied_request_never_reaches_the_inner_service_which_stays_ready() {
    let (svc, mut handle) = tower_test::mock::pair::<u32, &'static str>();
    let mut svc = tower::Layer::layer(&RateLimitLayer::new(Quota::per_hour(nz(1))), svc);
    handle.allow(2);
    let first = svc.ready().await.unwrap().call(1);
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen, 1);
    send.send_response("first");
    assert_eq!(first.await.unwrap(), "first");

    let denied = svc.ready().await.unwrap().call(2);
    assert!(matches!(denied.await, Err(Error::Limited(_))));
    // The readiness the denied request was given is still held: the next
    // request may be called without another poll_ready, and it is the
    // first the inner service sees since request 1.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let third = svc.call(3);
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen, 3, "request 2 never reached the inner service");
    send.send_response("third");
    assert_eq!(third.await.unwrap(), "third");
}
