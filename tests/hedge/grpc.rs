//! A slow gRPC call is hedged with the same message bytes once a
//! `ReplayableLayer` keeps them, and only with an `idempotency-key`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use palisade::attempt::{GrpcClassifier, IDEMPOTENCY_KEY};
use palisade::grpc::ReplayableLayer;
use palisade::hedge::HedgeLayer;
use tonic::Status;
use tonic::body::Body;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::{ms, nz};

/// The body of each call the server read, in call order.
type Seen = Arc<Mutex<Vec<Bytes>>>;

/// A unary call read once, as tonic sends it.
fn call(payload: &'static [u8], key: Option<&str>) -> Request<Body> {
    let frames = [Ok::<_, Status>(Frame::data(Bytes::from_static(payload)))];
    let mut builder = Request::post("/shop.Orders/Get").header("content-type", "application/grpc");
    if let Some(key) = key {
        builder = builder.header(IDEMPOTENCY_KEY, key);
    }
    builder
        .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
        .unwrap()
}

/// A server that reads each call's body, answers `OK` after the next of
/// `delays` (then 10 ms), with its call number in `grpc-message`.
fn server(
    delays: Arc<Mutex<Vec<u64>>>,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        let delay = {
            let mut delays = delays.lock().unwrap();
            if delays.is_empty() {
                10
            } else {
                delays.remove(0)
            }
        };
        async move {
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut log = log.lock().unwrap();
                log.push(bytes);
                log.len() - 1
            };
            tokio::time::sleep(ms(delay)).await;
            Ok::<_, Infallible>(Status::ok(n.to_string()).into_http::<Body>())
        }
    });
    (svc, seen)
}

#[tokio::test(start_paused = true)]
async fn a_slow_grpc_call_is_hedged_with_the_same_message_bytes() {
    let delays = Arc::new(Mutex::new(Vec::new()));
    let (svc, seen) = server(delays.clone());
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(HedgeLayer::new(GrpcClassifier::new()).min_samples(nz(10)))
        .service(svc);
    for _ in 0..10 {
        client
            .clone()
            .oneshot(call(b"warm", Some("w")))
            .await
            .unwrap();
    }

    // Without a key: never hedged, however slow.
    delays.lock().unwrap().extend([100]);
    let response = client
        .clone()
        .oneshot(call(b"\0\0\0\0\x03new", None))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-message"], "10");
    assert_eq!(seen.lock().unwrap().len(), 11);

    delays.lock().unwrap().extend([1000, 1]);
    let response = client
        .clone()
        .oneshot(call(b"\0\0\0\0\x03get", Some("k1")))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["grpc-message"],
        "12",
        "the hedge answered"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 13, "the first call and its hedge");
    assert_eq!(&seen[11][..], b"\0\0\0\0\x03get");
    assert_eq!(seen[12], seen[11], "the same bytes, twice");
}
