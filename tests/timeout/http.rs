//! Per-request deadlines, the budget header, propagation and the 504 problem.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade::problem::ProblemLayer;
use palisade::timeout::{Deadline, DeadlineRequest, Error, REQUEST_TIMEOUT, TimeoutLayer};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use super::{MS, never_answers, timed};

const MAX: Duration = Duration::from_secs(10);

fn request(budget_header: Option<&'static str>) -> Request<()> {
    let mut req = Request::new(());
    if let Some(v) = budget_header {
        req.headers_mut()
            .insert(REQUEST_TIMEOUT, HeaderValue::from_static(v));
    }
    req
}

/// Time until a per-request timeout with maximum [`MAX`] fails `req`, and the
/// budget it reports.
async fn fails_after(
    layer: TimeoutLayer<palisade::timeout::PerRequest>,
    req: Request<()>,
) -> (Duration, Duration) {
    let dropped = Arc::new(AtomicBool::new(false));
    let (res, took) = timed(layer.layer(never_answers(dropped)).oneshot(req)).await;
    match res {
        Err(Error::Elapsed { budget }) => (took, budget),
        other => panic!("expected Elapsed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn without_deadline_or_header_the_layer_timeout_applies() {
    let layer = TimeoutLayer::new(MAX).per_request();
    assert_eq!(fails_after(layer, request(None)).await, (MAX, MAX));
}

#[tokio::test(start_paused = true)]
async fn a_per_request_deadline_counts_from_the_call_not_the_first_poll() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = TimeoutLayer::new(Duration::from_secs(1))
        .per_request()
        .layer(never_answers(dropped.clone()));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(request(None)));
    advance(Duration::from_secs(1)).await;
    // First poll after the deadline: the timer is made then, already due.
    assert!(assert_ready!(fut.poll()).unwrap_err().is_elapsed());
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_extension_tightens_the_timeout_exactly() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = TimeoutLayer::new(MAX)
        .per_request()
        .layer(never_answers(dropped.clone()));
    let mut req = request(None);
    req.set_deadline(Deadline::after(Duration::from_secs(2)));
    svc.ready().await.unwrap();
    let mut fut = task::spawn(svc.call(req));
    assert_pending!(fut.poll());
    advance(Duration::from_secs(2) - MS).await;
    assert_pending!(fut.poll());
    advance(MS).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert!(matches!(err, Error::Elapsed { budget } if budget == Duration::from_secs(2)));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_later_deadline_cannot_extend_the_timeout_unless_override() {
    let mut req = request(None);
    req.set_deadline(Deadline::after(Duration::from_secs(30)));
    let tighten = TimeoutLayer::new(MAX).per_request();
    assert_eq!(fails_after(tighten, req).await, (MAX, MAX));

    let mut req = request(None);
    req.set_deadline(Deadline::after(Duration::from_secs(30)));
    let over = TimeoutLayer::new(MAX).per_request().override_timeout(true);
    let thirty = Duration::from_secs(30);
    assert_eq!(fails_after(over, req).await, (thirty, thirty));
}

#[tokio::test(start_paused = true)]
async fn a_header_budget_is_read_and_clamped_to_the_maximum() {
    let layer = TimeoutLayer::new(MAX).per_request();
    let short = Duration::from_millis(1500);
    assert_eq!(
        fails_after(layer.clone(), request(Some("1500"))).await,
        (short, short)
    );
    // A caller cannot ask for more than the layer allows.
    assert_eq!(
        fails_after(layer.clone(), request(Some("60000"))).await,
        (MAX, MAX)
    );
    assert_eq!(
        fails_after(layer, request(Some("99999999999999999999999"))).await,
        (MAX, MAX)
    );
    // Even in override mode the header is clamped.
    let over = TimeoutLayer::new(MAX).per_request().override_timeout(true);
    assert_eq!(fails_after(over, request(Some("60000"))).await, (MAX, MAX));
}

#[tokio::test(start_paused = true)]
async fn the_earliest_of_header_and_deadline_wins() {
    let layer = TimeoutLayer::new(MAX).per_request();
    let mut req = request(Some("4000"));
    req.set_deadline(Deadline::after(Duration::from_secs(6)));
    let four = Duration::from_secs(4);
    assert_eq!(fails_after(layer.clone(), req).await, (four, four));

    let mut req = request(Some("4000"));
    req.set_deadline(Deadline::after(Duration::from_secs(1)));
    let one = Duration::from_secs(1);
    assert_eq!(fails_after(layer, req).await, (one, one));
}

#[tokio::test(start_paused = true)]
async fn a_malformed_header_is_ignored_and_the_request_still_runs() {
    for bad in ["abc", "-5", "+5", "1.5", "2s", ""] {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let svc = TimeoutLayer::new(MAX)
            .per_request()
            .layer(service_fn(move |_: Request<()>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>("ok") }
            }));
        assert_eq!(
            svc.oneshot(request(Some(bad))).await.unwrap(),
            "ok",
            "{bad:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{bad:?}");
        // And the layer's maximum still bounds it.
        let layer = TimeoutLayer::new(MAX).per_request();
        assert_eq!(
            fails_after(layer, request(Some(bad))).await,
            (MAX, MAX),
            "{bad:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_header_name_or_no_header() {
    let mut req = request(None);
    req.headers_mut()
        .insert("x-budget-ms", HeaderValue::from_static("700"));
    let layer = TimeoutLayer::new(MAX)
        .per_request()
        .header("x-budget-ms".parse().unwrap());
    let ms700 = Duration::from_millis(700);
    assert_eq!(fails_after(layer, req).await, (ms700, ms700));

    let layer = TimeoutLayer::new(MAX).per_request().read_header(false);
    assert_eq!(fails_after(layer, request(Some("700"))).await, (MAX, MAX));
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_fails_at_once_without_calling_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .layer(service_fn(move |_: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>("ok") }
        }));
    let mut req = request(None);
    req.set_deadline(Deadline::after(Duration::from_secs(1)));
    advance(Duration::from_secs(1)).await;
    let (res, took) = timed(svc.clone().oneshot(req)).await;
    assert!(matches!(
        res,
        Err(Error::Elapsed {
            budget: Duration::ZERO
        })
    ));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A zero header budget too.
    assert!(
        svc.oneshot(request(Some("0")))
            .await
            .unwrap_err()
            .is_elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_inner_service_sees_the_remaining_budget() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = service_fn(move |req: Request<()>| {
        let record = record.clone();
        async move {
            let deadline = req.deadline().expect("the timeout leaves its deadline");
            record.lock().unwrap().push(deadline.remaining());
            tokio::time::sleep(Duration::from_millis(500)).await;
            record.lock().unwrap().push(deadline.remaining());
            let mut outgoing = Request::new(());
            deadline.write_header(outgoing.headers_mut());
            Ok::<_, Infallible>(outgoing.headers()[REQUEST_TIMEOUT].clone())
        }
    });
    let svc = TimeoutLayer::new(MAX).per_request().layer(inner);
    let forwarded = svc.oneshot(request(Some("2000"))).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [Duration::from_secs(2), Duration::from_millis(1500)]
    );
    assert_eq!(forwarded, "1500");
}

/// A server stack (maximum 10 s, reads the header) whose handler calls a
/// client stack (own timeout `client`, forwards its budget as a header) whose
/// downstream never answers. Returns how long the server call took, the
/// client's error and the header the downstream received.
async fn nested(header: &'static str, client: Duration) -> (Duration, Duration, HeaderValue) {
    let received = Arc::new(Mutex::new(None));
    let record = received.clone();
    let downstream = service_fn(move |req: Request<()>| {
        *record.lock().unwrap() = req.headers().get(REQUEST_TIMEOUT).cloned();
        std::future::pending::<Result<Response<()>, Infallible>>()
    });
    let client = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(client)
                .per_request()
                .read_header(false)
                .forward_header(true),
        )
        .service(downstream);
    let handler = service_fn(move |incoming: Request<()>| {
        let client = client.clone();
        async move {
            let mut outgoing = Request::new(());
            if let Some(deadline) = incoming.deadline() {
                outgoing.set_deadline(deadline);
            }
            client.oneshot(outgoing).await
        }
    });
    let server = TimeoutLayer::new(MAX).per_request().layer(handler);
    let (res, took) = timed(server.oneshot(request(Some(header)))).await;
    let budget = match res {
        Err(Error::Inner(Error::Elapsed { budget })) => budget,
        other => panic!("expected the client's Elapsed, got {other:?}"),
    };
    let header = received.lock().unwrap().clone().expect("budget forwarded");
    (took, budget, header)
}

#[tokio::test(start_paused = true)]
async fn a_nested_client_timeout_uses_the_smaller_of_its_own_and_what_is_left() {
    // Less left than the client's own 3 s: the incoming budget wins.
    let two = Duration::from_secs(2);
    assert_eq!(
        nested("2000", Duration::from_secs(3)).await,
        (two, two, HeaderValue::from_static("2000"))
    );
    // More left than the client's own 1 s: the client's timeout wins.
    let one = Duration::from_secs(1);
    assert_eq!(
        nested("5000", one).await,
        (one, one, HeaderValue::from_static("1000"))
    );
}

async fn slow_handler() -> &'static str {
    tokio::time::sleep(Duration::from_secs(60)).await;
    "too late"
}

async fn fast_handler() -> &'static str {
    "fast"
}

fn app() -> Router {
    Router::new()
        .route("/slow", get(slow_handler))
        .route("/fast", get(fast_handler))
        .layer(
            ServiceBuilder::new()
                .layer(ProblemLayer::new())
                .layer(TimeoutLayer::new(Duration::from_secs(3)).per_request()),
        )
}

#[tokio::test(start_paused = true)]
async fn an_axum_router_answers_504_problem_json_when_the_budget_runs_out() {
    let req = Request::get("/slow")
        .header(REQUEST_TIMEOUT, "1200")
        .body(Body::empty())
        .unwrap();
    let (res, took) = timed(app().oneshot(req)).await;
    let res = res.unwrap();
    assert_eq!(took, Duration::from_millis(1200));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": palisade::problem::types::TIMED_OUT,
            "title": "Timed out",
            "status": 504,
            "detail": "the request did not complete within its budget of 1200 ms",
            "budget_ms": 1200,
        })
    );

    let res = app()
        .oneshot(Request::get("/fast").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn elapsed_is_an_axum_response_and_inner_problems_pass_through() {
    use axum::response::IntoResponse;
    use palisade::problem::{IntoProblem, Problem};

    let res = Error::<Infallible>::Elapsed {
        budget: Duration::from_secs(3),
    }
    .into_response();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let inner = Error::Inner(Problem::new(StatusCode::BAD_GATEWAY)).into_problem();
    assert_eq!(inner.status(), StatusCode::BAD_GATEWAY);
}
