//! A gRPC breaker: calls counted by `grpc-status`, in the headers of a
//! trailers-only response or in the trailers at the end of the body.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use palisade::circuit_breaker::{
    Config, Error, GrpcBody, GrpcCircuitBreakerLayer, GrpcClassifier, State,
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{SEC, nz};

type Frames = StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
>;

/// What the test server answers.
#[derive(Debug, Clone)]
enum Answer {
    /// A trailers-only response with this code.
    Head(u8),
    /// A message, then trailers with this code (`None`: no trailers).
    Trailers(Option<u8>),
    /// A plain HTTP answer, not gRPC.
    Http(StatusCode),
}

fn response(answer: &Answer) -> Response<Frames> {
    let grpc = Response::builder().header("content-type", "application/grpc");
    let frames = |frames: Vec<http_body::Frame<Bytes>>| {
        StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    };
    match answer {
        Answer::Head(code) => grpc
            .header("grpc-status", code.to_string())
            .body(frames(vec![]))
            .unwrap(),
        Answer::Trailers(code) => {
            let mut body = vec![http_body::Frame::data(Bytes::from_static(
                b"\0\0\0\0\x02hi",
            ))];
            if let Some(code) = code {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from(u16::from(*code)));
                body.push(http_body::Frame::trailers(trailers));
            }
            grpc.body(frames(body)).unwrap()
        }
        Answer::Http(status) => Response::builder()
            .status(*status)
            .body(frames(vec![]))
            .unwrap(),
    }
}

/// A server answering each request with the answer in its extensions,
/// counting the calls that reach it.
fn server(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<Frames>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = req.extensions().get::<Answer>().cloned().unwrap();
        async move { Ok(response(&answer)) }
    })
}

fn request(answer: Answer) -> Request<()> {
    let mut req = Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    req.extensions_mut().insert(answer);
    req
}

type Res = Result<Response<GrpcBody<Frames>>, Error<Infallible>>;

async fn call<S>(svc: &mut S, answer: Answer) -> Res
where
    S: Service<Request<()>, Response = Response<GrpcBody<Frames>>, Error = Error<Infallible>>,
{
    svc.ready().await?.call(request(answer)).await
}

/// Calls and reads the whole body, as a gRPC client does.
async fn call_to_end<S>(svc: &mut S, answer: Answer) -> Option<u8>
where
    S: Service<Request<()>, Response = Response<GrpcBody<Frames>>, Error = Error<Infallible>>,
{
    let response = call(svc, answer).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

fn layer(failures: u32) -> GrpcCircuitBreakerLayer {
    GrpcCircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(failures))
            .open_wait(10 * SEC),
    )
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_unavailable_counts_and_invalid_argument_does_not() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer(2);
    let handle = layer.handle();
    let mut svc = layer.layer(server(calls.clone()));

    // INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED: the server answers.
    for code in [3, 5, 8, 3, 5, 8] {
        call(&mut svc, Answer::Head(code)).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 0);

    call(&mut svc, Answer::Head(14)).await.unwrap();
    assert_eq!(handle.metrics().consecutive_failures, 1);
    // CANCELLED is the caller's doing: ignored, the streak stands.
    call(&mut svc, Answer::Head(1)).await.unwrap();
    assert_eq!(handle.metrics().consecutive_failures, 1);
    call(&mut svc, Answer::Head(13)).await.unwrap();
    assert_eq!(handle.state(), State::Open);

    let err = call(&mut svc, Answer::Head(0)).await.unwrap_err();
    assert!(err.is_open(), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 9);
}

#[tokio::test(start_paused = true)]
async fn a_status_in_the_trailers_counts_when_the_body_ends() {
    let layer = layer(1);
    let handle = layer.handle();
    let mut svc = layer.layer(server(Arc::default()));

    let response = call(&mut svc, Answer::Trailers(Some(14))).await.unwrap();
    // The headers said nothing: the call is not counted yet.
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 0);
    let collected = response.into_body().collect().await.unwrap();
    // The body passes through unchanged, trailers included.
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_ok_in_the_trailers_is_a_success_and_resets_the_streak() {
    let layer = layer(2);
    let handle = layer.handle();
    let mut svc = layer.layer(server(Arc::default()));

    assert_eq!(
        call_to_end(&mut svc, Answer::Trailers(Some(2))).await,
        Some(2)
    );
    assert_eq!(handle.metrics().consecutive_failures, 1);
    assert_eq!(
        call_to_end(&mut svc, Answer::Trailers(Some(0))).await,
        Some(0)
    );
    assert_eq!(handle.metrics().consecutive_failures, 0);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_ends_without_a_status_is_a_failure() {
    let layer = layer(1);
    let handle = layer.handle();
    let mut svc = layer.layer(server(Arc::default()));
    assert_eq!(call_to_end(&mut svc, Answer::Trailers(None)).await, None);
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn answers_that_are_not_grpc_are_read_as_grpc_reads_them() {
    // 503 and 429 are UNAVAILABLE; 404 is UNIMPLEMENTED (the server
    // answers); a 200 that is not gRPC is UNKNOWN.
    for (status, fails) in [
        (StatusCode::SERVICE_UNAVAILABLE, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::BAD_GATEWAY, true),
        (StatusCode::NOT_FOUND, false),
        (StatusCode::OK, true),
    ] {
        let layer = layer(1);
        let handle = layer.handle();
        let mut svc = layer.layer(server(Arc::default()));
        call(&mut svc, Answer::Http(status)).await.unwrap();
        let expected = if fails { State::Open } else { State::Closed };
        assert_eq!(handle.state(), expected, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_is_a_failure() {
    let layer = layer(1);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<Frames>, _>("connection refused")
    }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inner("connection refused")));
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_body_is_dropped_unread_gives_its_permit_back() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = GrpcCircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(1))
            .open_wait(10 * SEC)
            .half_open_probes(nz(1)),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(server(calls.clone()));
    call(&mut svc, Answer::Head(14)).await.unwrap();
    assert_eq!(handle.state(), State::Open);

    tokio::time::advance(10 * SEC).await;
    // The probe's answer arrives, its status still to come: the body is
    // dropped before its end (the caller hung up).
    let probe = call(&mut svc, Answer::Trailers(Some(14))).await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    // While it is held, its permit is taken: no second probe.
    assert!(call(&mut svc, Answer::Head(0)).await.unwrap_err().is_open());
    drop(probe);
    assert_eq!(
        handle.state(),
        State::HalfOpen,
        "a dropped probe decides nothing"
    );
    // The permit is back: the next probe runs, and its success closes.
    assert_eq!(
        call_to_end(&mut svc, Answer::Trailers(Some(0))).await,
        Some(0)
    );
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_classifier_chooses_the_failures() {
    let layer = layer(1).classify(GrpcClassifier::new().failure_codes([8]));
    let handle = layer.handle();
    let mut svc = layer.layer(server(Arc::default()));
    call(&mut svc, Answer::Head(14)).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "14 is no failure here");
    call(&mut svc, Answer::Head(8)).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

#[cfg(feature = "grpc")]
#[tokio::test(start_paused = true)]
async fn under_a_problem_layer_an_open_breaker_is_unavailable_with_pushback() {
    use palisade::problem::ProblemLayer;

    let layer = layer(1);
    let mut svc = tower::ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "14")
                    .body(tonic::body::Body::empty())
                    .unwrap(),
            )
        }));
    let grpc = || {
        Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    let first = svc.ready().await.unwrap().call(grpc()).await.unwrap();
    assert_eq!(first.headers()["grpc-status"], "14");
    assert!(first.headers().get("grpc-retry-pushback-ms").is_none());

    let refused = svc.ready().await.unwrap().call(grpc()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::OK);
    let status = tonic::Status::from_header_map(refused.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(refused.headers()["grpc-retry-pushback-ms"], "10000");
}

#[tokio::test(start_paused = true)]
async fn a_new_config_applies_to_a_grpc_breaker_from_the_next_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer(5);
    let handle = layer.handle();
    let mut svc = layer.layer(server(calls.clone()));
    for _ in 0..2 {
        call(&mut svc, Answer::Head(14)).await.unwrap();
    }

    handle
        .set_config(
            Config::new()
                .consecutive_failures(nz(3))
                .open_wait(10 * SEC),
        )
        .unwrap();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        call_to_end(&mut svc, Answer::Trailers(Some(14))).await,
        Some(14)
    );
    assert_eq!(
        handle.state(),
        State::Open,
        "the lowered threshold did not apply"
    );
}
