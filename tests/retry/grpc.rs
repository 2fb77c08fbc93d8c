//! gRPC calls through a `ReplayableLayer`: the same message bytes on every
//! attempt, retried only on retryable codes, after the server's pushback,
//! only with an `idempotency-key` (or on a layer told every call is safe),
//! never over the body limit, never once committed, and nothing left behind
//! by a dropped call.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use palisade::attempt::{GrpcClassifier, IDEMPOTENCY_KEY, Replay};
use palisade::grpc::{DEFAULT_BODY_LIMIT, ReplayableLayer};
use palisade::retry::RetryLayer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_test::{assert_pending, task};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::quick_backoff;

/// One length-prefixed gRPC message, as tonic frames it: no compression, a
/// big-endian length, the bytes.
fn message(payload: &[u8]) -> Bytes {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    Bytes::from(framed)
}

/// A body read once, as tonic's encoder yields it: the message in two
/// frames (prefix, then payload), from a stream.
fn stream_body(message: &Bytes) -> Body {
    let frames =
        [message.slice(..5), message.slice(5..)].map(|chunk| Ok::<_, Status>(Frame::data(chunk)));
    Body::new(StreamBody::new(futures::stream::iter(frames)))
}

/// A unary call as a tonic client sends it, with an `idempotency-key` if
/// `key`.
fn call(message: &Bytes, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/shop.Orders/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(key) = key {
        builder = builder.header(IDEMPOTENCY_KEY, key);
    }
    builder.body(stream_body(message)).unwrap()
}

/// What the server read of each attempt: when, and the body's bytes.
type Seen = Arc<Mutex<Vec<(Instant, Bytes)>>>;

/// A server that reads each attempt's whole body, then answers the next
/// status of `script` (the last repeats) as a trailers-only response.
fn server(
    script: Vec<Status>,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let script = Arc::new(script);
    let svc = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        let script = script.clone();
        async move {
            let at = Instant::now();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut log = log.lock().unwrap();
                log.push((at, bytes));
                log.len() - 1
            };
            let status = script[n.min(script.len() - 1)].clone();
            Ok::<_, Infallible>(status.into_http::<Body>())
        }
    });
    (svc, seen)
}

fn unavailable() -> Status {
    Status::unavailable("restarting")
}

fn retry() -> RetryLayer<GrpcClassifier> {
    RetryLayer::new(GrpcClassifier::new()).backoff(quick_backoff())
}

fn status_of(response: &Response<Body>) -> &str {
    response.headers()["grpc-status"].to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn unavailable_twice_then_ok_sends_the_same_message_three_times() {
    let (svc, seen) = server(vec![unavailable(), unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let sent = message(b"order 42");
    let response = client.oneshot(call(&sent, Some("k1"))).await.unwrap();
    assert_eq!(status_of(&response), "0");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (_, bytes) in seen.iter() {
        assert_eq!(bytes, &sent, "every attempt carries the message bytes");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_is_the_answer_and_sent_once() {
    let (svc, seen) = server(vec![Status::invalid_argument("bad id"), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let response = client
        .oneshot(call(&message(b"x"), Some("k1")))
        .await
        .unwrap();
    assert_eq!(status_of(&response), "3");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_servers_pushback_is_the_wait() {
    let mut pushed_back = unavailable().into_http::<Body>();
    pushed_back
        .headers_mut()
        .insert("grpc-retry-pushback-ms", HeaderValue::from_static("750"));
    // A server whose first answer carries a pushback.
    let (inner, seen) = server(vec![unavailable(), Status::ok("")]);
    let first = Arc::new(AtomicBool::new(true));
    let pushed_back = Arc::new(Mutex::new(Some(pushed_back)));
    let svc = inner.map_response(move |response| {
        if first.swap(false, Ordering::SeqCst) {
            pushed_back.lock().unwrap().take().unwrap()
        } else {
            response
        }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let response = client
        .oneshot(call(&message(b"x"), Some("k1")))
        .await
        .unwrap();
    assert_eq!(status_of(&response), "0");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].0 - seen[0].0,
        Duration::from_millis(750),
        "the pushback, not the 1 ms backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_without_an_idempotency_key_is_sent_once_unless_the_layer_says_all_are_safe() {
    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let response = client.oneshot(call(&message(b"x"), None)).await.unwrap();
    assert_eq!(status_of(&response), "14", "the first answer, as it is");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new().idempotent(true))
        .layer(retry())
        .service(svc);
    let response = client.oneshot(call(&message(b"x"), None)).await.unwrap();
    assert_eq!(status_of(&response), "0");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_the_layer_a_tonic_call_is_never_sent_twice() {
    let keyed = call(&message(b"x"), Some("k1"));
    assert!(keyed.replay().is_none(), "a stream is read once");
    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new().layer(retry()).service(svc);
    let response = client.oneshot(keyed).await.unwrap();
    assert_eq!(status_of(&response), "14");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once_and_intact() {
    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let sent = message(b"0123456789");
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new().body_limit(sent.len() - 1))
        .layer(retry())
        .service(svc);
    let response = client.oneshot(call(&sent, Some("k1"))).await.unwrap();
    assert_eq!(status_of(&response), "14");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, sent);
    }

    // At the limit exactly, it is kept.
    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new().body_limit(sent.len()))
        .layer(retry())
        .service(svc);
    let response = client.oneshot(call(&sent, Some("k1"))).await.unwrap();
    assert_eq!(status_of(&response), "0");
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(DEFAULT_BODY_LIMIT, 1024 * 1024);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_is_replayed_empty() {
    let (svc, seen) = server(vec![unavailable(), Status::ok("")]);
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let request = Request::post("/shop.Orders/Ping")
        .header(IDEMPOTENCY_KEY, "k1")
        .body(Body::empty())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(status_of(&response), "0");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, bytes)| bytes.is_empty()));
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A body fed while the call runs (a client stream): the frames already
/// queued, then whatever the sender sends; it holds a flag.
struct Fed {
    ready: VecDeque<Bytes>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    _flag: DropFlag,
}

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(chunk) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn fed(first: &'static [u8]) -> (Body, mpsc::UnboundedSender<Bytes>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Fed {
        ready: VecDeque::from([Bytes::from_static(first)]),
        rx,
        _flag: DropFlag(dropped.clone()),
    };
    (Body::new(body), tx, dropped)
}

#[tokio::test(start_paused = true)]
async fn a_stream_fed_while_the_call_runs_is_not_waited_for_and_sent_once() {
    // The server answers after the first message, before the client sends
    // its second: waiting for the whole body would never end.
    let (body, tx, _) = fed(b"first");
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
    let answered_tx = Arc::new(Mutex::new(Some(answered_tx)));
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let answered = answered_tx.lock().unwrap().take();
        let log = log.clone();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            answered.unwrap().send(()).unwrap();
            let rest = body.collect().await.unwrap().to_bytes();
            log.lock()
                .unwrap()
                .push((Instant::now(), [first, rest].concat().into()));
            Ok::<_, Infallible>(unavailable().into_http::<Body>())
        }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);
    let request = Request::post("/shop.Orders/Upload")
        .header(IDEMPOTENCY_KEY, "k1")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(client.oneshot(request));
    answered_rx.await.expect("the server saw the first message");
    tx.send(Bytes::from_static(b", second")).unwrap();
    drop(tx);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(status_of(&response), "14", "streamed: not sent again");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].1[..], b"first, second");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_leaves_nothing_behind() {
    // The server holds the request (and its body) and never answers.
    let svc = tower::service_fn(|req: Request<Body>| async move {
        let _held = req;
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(svc);

    // Streamed (fed while the call runs): dropped with the call.
    let (body, tx, dropped) = fed(b"first");
    let request = Request::post("/shop.Orders/Upload")
        .header(IDEMPOTENCY_KEY, "k1")
        .body(body)
        .unwrap();
    let mut future = task::spawn(client.clone().oneshot(request));
    assert_pending!(future.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    drop(future);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the body went with the call"
    );
    assert!(tx.is_closed(), "no one is left reading the stream");

    // Buffered: the original stream is dropped at once, the copy with the
    // call.
    let (body, tx, dropped) = fed(b"first");
    drop(tx); // the stream is whole: it ends after its first message
    let request = Request::post("/shop.Orders/Get")
        .header(IDEMPOTENCY_KEY, "k1")
        .body(body)
        .unwrap();
    let mut future = task::spawn(client.oneshot(request));
    assert_pending!(future.poll());
    assert!(dropped.load(Ordering::SeqCst), "read whole, then let go");
    drop(future);
}

/// A full response: headers without a status, a message, then the status
/// in trailers.
fn full_response(code: Code) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from_str(&(code as i32).to_string()).unwrap(),
    );
    let frames = [
        Ok::<_, Status>(Frame::data(message(b"partial"))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_headers_arrived_is_committed_and_returned_as_it_is() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = tower::service_fn(move |_: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(full_response(Code::Unavailable)) }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayableLayer::new().idempotent(true))
        .layer(retry())
        .service(svc);
    let response = client
        .oneshot(call(&message(b"x"), Some("k1")))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "committed: never retried");
    assert!(!response.headers().contains_key("grpc-status"));
    let body = response.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(body.to_bytes(), message(b"partial"));
}

/// A tonic codec for raw bytes: the message is its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len)))
    }
}

/// A full `OK` response carrying `payload`.
fn ok_with(payload: &[u8]) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Status>(Frame::data(message(payload))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_tonic_client_call_is_retried_with_the_body_tonic_encoded() {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let server = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        async move {
            assert_eq!(req.uri().path(), "/shop.Orders/Get");
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut log = log.lock().unwrap();
                log.push((Instant::now(), bytes));
                log.len()
            };
            let response = match n {
                1 | 2 => unavailable().into_http::<Body>(),
                _ => ok_with(b"order 42: shipped"),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let stack = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(server);
    let mut client = tonic::client::Grpc::new(stack);

    let mut request = tonic::Request::new(Bytes::from_static(b"order 42"));
    request
        .metadata_mut()
        .insert("idempotency-key", "k1".parse().unwrap());
    client.ready().await.unwrap();
    let answer = client
        .unary(request, "/shop.Orders/Get".parse().unwrap(), Raw)
        .await
        .unwrap();
    assert_eq!(&answer.into_inner()[..], b"order 42: shipped");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (_, bytes) in seen.iter() {
        assert_eq!(bytes, &message(b"order 42"), "tonic's framing, each time");
    }
}

#[tokio::test(start_paused = true)]
async fn a_tonic_client_call_without_a_key_gets_the_first_status() {
    let (server, seen) = server(vec![unavailable(), Status::ok("")]);
    let stack = ServiceBuilder::new()
        .layer(ReplayableLayer::new())
        .layer(retry())
        .service(server);
    let mut client = tonic::client::Grpc::new(stack);
    client.ready().await.unwrap();
    let status = client
        .unary(
            tonic::Request::new(Bytes::from_static(b"order 42")),
            "/shop.Orders/Get".parse().unwrap(),
            Raw,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "restarting");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
