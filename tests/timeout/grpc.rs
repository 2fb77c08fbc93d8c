//! gRPC deadlines: `grpc-timeout` read, clamped, refused when malformed, and
//! forwarded, on paused time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use palisade::grpc::{GRPC_TIMEOUT, grpc_timeout_value, parse_grpc_timeout};
use palisade::problem::ProblemLayer;
use palisade::timeout::{Deadline, DeadlineRequest, Error, REQUEST_TIMEOUT, TimeoutLayer};
use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const MAX: Duration = Duration::from_secs(10);

/// A gRPC request (or an HTTP one) with a `grpc-timeout`, if any.
fn request(grpc: bool, grpc_timeout: Option<&str>) -> Request<()> {
    let content_type = if grpc {
        "application/grpc+proto"
    } else {
        "application/json"
    };
    let mut req = Request::builder()
        .header(CONTENT_TYPE, content_type)
        .body(())
        .unwrap();
    if let Some(value) = grpc_timeout {
        req.headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
    }
    req
}

/// The deadline and the headers of one call, as the inner service saw them.
type Call = (Option<Deadline>, HeaderMap);

/// What the inner service saw, call by call.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Call>>>);

impl Seen {
    fn service(
        &self,
    ) -> impl Service<Request<()>, Response = Response<Bytes>, Error = std::convert::Infallible>
    + Clone
    + use<> {
        let seen = self.0.clone();
        service_fn(move |req: Request<()>| {
            seen.lock()
                .unwrap()
                .push((req.deadline(), req.headers().clone()));
            async { Ok(Response::new(Bytes::new())) }
        })
    }

    fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn last(&self) -> Call {
        self.0.lock().unwrap().last().cloned().expect("a call")
    }
}

/// The deadline the inner service gets for `req` behind a per-request
/// timeout of `max`.
async fn deadline_of(max: Duration, req: Request<()>) -> Deadline {
    let seen = Seen::default();
    let svc = TimeoutLayer::new(max).per_request().layer(seen.service());
    svc.oneshot(req).await.unwrap();
    seen.last().0.expect("the timeout leaves its deadline")
}

#[tokio::test(start_paused = true)]
async fn each_unit_of_grpc_timeout_shortens_the_deadline() {
    let max = Duration::from_secs(3 * 3600);
    for (value, budget) in [
        ("2H", Duration::from_secs(2 * 3600)),
        ("3M", Duration::from_secs(180)),
        ("4S", Duration::from_secs(4)),
        ("250m", Duration::from_millis(250)),
        ("750u", Duration::from_micros(750)),
        ("999n", Duration::from_nanos(999)),
    ] {
        let now = Instant::now();
        let deadline = deadline_of(max, request(true, Some(value))).await;
        assert_eq!(deadline.instant(), now + budget, "{value}");
    }

    // No time at all: the answer could not be used, so the call is spared.
    let seen = Seen::default();
    let svc = TimeoutLayer::new(max).per_request().layer(seen.service());
    let err = svc.oneshot(request(true, Some("0m"))).await.unwrap_err();
    assert!(matches!(err, Error::Elapsed { budget } if budget.is_zero()));
    assert_eq!(seen.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_timeout_longer_than_the_layer_timeout_is_clamped() {
    let now = Instant::now();
    let deadline = deadline_of(MAX, request(true, Some("1M"))).await;
    assert_eq!(deadline.instant(), now + MAX);

    // And the call does time out at the layer's timeout.
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .layer(super::never_answers(Arc::default()));
    let (res, took) = super::timed(svc.oneshot(request(true, Some("99999999H")))).await;
    assert!(matches!(res, Err(Error::Elapsed { budget }) if budget == MAX));
    assert_eq!(took, MAX);
}

#[tokio::test(start_paused = true)]
async fn a_short_grpc_timeout_times_the_call_out_at_its_budget() {
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .layer(super::never_answers(Arc::default()));
    let (res, took) = super::timed(svc.oneshot(request(true, Some("1500m")))).await;
    assert!(matches!(res, Err(Error::Elapsed { budget }) if budget == Duration::from_millis(1500)));
    assert_eq!(took, Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn a_malformed_grpc_timeout_is_refused_without_calling_the_inner_service() {
    for bad in ["1.5S", "123456789m", "10", "1x", "", "-1S", "1s"] {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = {
            let calls = calls.clone();
            service_fn(move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::convert::Infallible>(Response::new(Bytes::new())) }
            })
        };
        let timeout = TimeoutLayer::new(MAX).per_request();
        let err = timeout
            .layer(counted.clone())
            .oneshot(request(true, Some(bad)))
            .await
            .unwrap_err();
        match &err {
            Error::InvalidBudget { value } => assert_eq!(value, bad),
            other => panic!("{bad:?}: expected InvalidBudget, got {other:?}"),
        }
        assert!(err.to_string().contains("malformed grpc-timeout"), "{err}");

        let served = ServiceBuilder::new()
            .layer(ProblemLayer::new())
            .layer(TimeoutLayer::new(MAX).per_request())
            .service(counted);
        let response = served.oneshot(request(true, Some(bad))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{bad:?}");
        assert_eq!(response.headers()["grpc-status"], "3", "{bad:?}");
        assert!(response.body().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{bad:?}: inner called");
    }
}

#[tokio::test(start_paused = true)]
async fn with_read_header_off_a_malformed_grpc_timeout_is_not_read() {
    // `read_header(false)`: the header is not the caller's to set, so not read.
    let seen = Seen::default();
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .read_header(false)
        .layer(seen.service());
    let now = Instant::now();
    svc.oneshot(request(true, Some("1.5S"))).await.unwrap();
    assert_eq!(seen.last().0.unwrap().instant(), now + MAX);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_grpc_timeout_is_a_400_problem_for_an_http_client() {
    use palisade::problem::{IntoProblem, types};
    let problem = Error::<std::convert::Infallible>::InvalidBudget {
        value: "1x".to_owned(),
    }
    .into_problem();
    assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem.type_uri(), types::INVALID_TIMEOUT);
    assert_eq!(problem.title(), "Invalid timeout");
    assert_eq!(
        problem.extension("errors").unwrap()[0]["header"],
        "grpc-timeout"
    );
    // INVALID_ARGUMENT for a gRPC client.
    assert_eq!(
        palisade::grpc::trailers_only_headers(&problem)["grpc-status"],
        "3"
    );
}

#[tokio::test(start_paused = true)]
async fn a_grpc_request_forwards_the_budget_left_as_grpc_timeout() {
    let seen = Seen::default();
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .forward_header(true)
        .layer(seen.service());

    svc.clone()
        .oneshot(request(true, Some("5S")))
        .await
        .unwrap();
    let (_, headers) = seen.last();
    assert_eq!(
        headers[GRPC_TIMEOUT],
        grpc_timeout_value(Duration::from_secs(5))
    );
    assert!(headers.get(REQUEST_TIMEOUT).is_none());

    // A deadline carried in: what is left of it when the call starts.
    let mut req = request(true, None);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(3)));
    advance(Duration::from_millis(1250)).await;
    svc.oneshot(req).await.unwrap();
    let (_, headers) = seen.last();
    let forwarded = parse_grpc_timeout(&headers[GRPC_TIMEOUT]).unwrap();
    assert_eq!(forwarded, Duration::from_millis(1750));
    assert!(headers.get(REQUEST_TIMEOUT).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_http_request_ignores_grpc_timeout_and_keeps_its_header() {
    let seen = Seen::default();
    let svc = TimeoutLayer::new(MAX)
        .per_request()
        .forward_header(true)
        .layer(seen.service());
    let now = Instant::now();
    for value in ["1m", "1.5S"] {
        svc.clone()
            .oneshot(request(false, Some(value)))
            .await
            .unwrap();
        let (deadline, headers) = seen.last();
        assert_eq!(deadline.unwrap().instant(), now + MAX, "{value}");
        assert_eq!(headers[REQUEST_TIMEOUT], "10000");
        // The request's own header passes through untouched.
        assert_eq!(headers[GRPC_TIMEOUT], value);
    }
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_request_takes_its_budget_from_grpc_timeout_alone() {
    let mut req = request(true, None);
    req.headers_mut()
        .insert(REQUEST_TIMEOUT, HeaderValue::from_static("100"));
    let now = Instant::now();
    assert_eq!(deadline_of(MAX, req).await.instant(), now + MAX);
}

#[tokio::test(start_paused = true)]
async fn write_grpc_timeout_writes_the_time_left() {
    let deadline = Deadline::after(Duration::from_secs(2));
    advance(Duration::from_millis(500)).await;
    let mut headers = HeaderMap::new();
    headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("1H"));
    deadline.write_grpc_timeout(&mut headers);
    assert_eq!(headers[GRPC_TIMEOUT], "1500000u");
    assert_eq!(headers.get_all(GRPC_TIMEOUT).iter().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_future_dropped_unpolled_calls_nothing() {
    let seen = Seen::default();
    let mut svc = TimeoutLayer::new(MAX).per_request().layer(seen.service());
    svc.ready().await.unwrap();
    drop(svc.call(request(true, Some("1x"))));
    assert_eq!(seen.calls(), 0);
}

proptest! {
    /// Any `grpc-timeout` either reaches the inner service with a deadline
    /// no later than the layer's timeout, or is refused, as the parser says.
    #[test]
    fn any_grpc_timeout_is_parsed_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let seen = Seen::default();
            let svc = TimeoutLayer::new(MAX).per_request().layer(seen.service());
            let mut req = request(true, None);
            req.headers_mut().insert(GRPC_TIMEOUT, value.clone());
            let now = Instant::now();
            let result = svc.oneshot(req).await;
            match parse_grpc_timeout(&value) {
                Ok(budget) if budget.is_zero() => {
                    prop_assert!(matches!(result, Err(Error::Elapsed { .. })), "{:?}", result);
                    prop_assert_eq!(seen.calls(), 0);
                }
                Ok(budget) => {
                    prop_assert!(result.is_ok());
                    let deadline = seen.last().0.unwrap();
                    prop_assert_eq!(deadline.instant(), now + budget.min(MAX));
                }
                Err(_) => {
                    prop_assert!(matches!(result, Err(Error::InvalidBudget { .. })), "{:?}", result);
                    prop_assert_eq!(seen.calls(), 0);
                }
            }
            Ok(())
        })?;
    }
}
