//! gRPC calls: the key and the caller key come from metadata, the
//! fingerprint covers the framed message, and a replay is the response the
//! handler gave, trailers (`grpc-status`) included, on both stores.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use futures::channel::mpsc;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use palisade::BoxError;
use palisade::idempotency::{
    Claim, Completion, Error, Fingerprint, FingerprintMode, IdempotencyLayer, MemoryStore,
    OnCancel, Record, ResponseBody, Store, StoredResponse,
};
use palisade::key::Header;
use palisade::problem::{IntoProblem, types};
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

const KEY: &str = "0c6f7c1e-4a53-4c8e-9a0b-6f4f6b2f3a11";
const PATH: &str = "/shop.v1.Orders/CreateOrder";
/// gRPC codes, as `grpc::code_of` gives them (`tonic::Code` as `i32`).
const FAILED_PRECONDITION: i32 = 9;
const ABORTED: i32 = 10;

type Sender = mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;
type GrpcBody = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>>;
type Handler = Arc<dyn Fn(&Request<Full<Bytes>>, usize, Sender) + Send + Sync>;

/// A protobuf message as gRPC frames it: compressed flag, big-endian
/// length, message bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap());
    buf.extend_from_slice(message);
    buf.freeze()
}

/// A unary call from `caller` (its `x-api-key` metadata) carrying `message`.
fn call_as(caller: &str, key: Option<&str>, message: &[u8]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", caller);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Full::new(framed(message))).unwrap()
}

fn code(problem: &palisade::problem::Problem) -> i32 {
    i32::from(palisade::grpc::code_of(problem))
}

fn call(key: Option<&str>, message: &[u8]) -> Request<Full<Bytes>> {
    call_as("k-alice", key, message)
}

/// What a client read: status, headers, body bytes and trailers.
#[derive(Debug, PartialEq)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    /// The reply as the handler gave it: without the replay marker.
    fn unmarked(mut self) -> Self {
        self.headers.remove("idempotent-replayed");
        self
    }
}

async fn read(response: Response<ResponseBody<GrpcBody>>) -> Reply {
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        match frame.into_data() {
            Ok(chunk) => {
                assert!(trailers.is_none(), "data after the trailers");
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                let t = frame.into_trailers().expect("data or trailers");
                assert!(trailers.replace(t).is_none(), "one trailers frame");
            }
        }
    }
    assert!(body.is_end_stream());
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: data.freeze(),
        trailers,
    }
}

/// The layer around a handler that writes its response body into a channel
/// (and gets the number of its call, 0 first); returns the service and the
/// number of calls that reached the handler.
#[allow(clippy::type_complexity)]
fn serve<St, K>(
    layer: IdempotencyLayer<St, K>,
    handler: Handler,
) -> (
    impl Service<
        Request<Full<Bytes>>,
        Response = Response<ResponseBody<GrpcBody>>,
        Error = Error<Infallible>,
    > + Clone
    + Send
    + 'static,
    Arc<Mutex<usize>>,
)
where
    St: Store,
    K: palisade::key::KeyExtractor<Request<Full<Bytes>>> + Clone + Send + Sync + 'static,
{
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let n = {
            let mut calls = counted.lock().unwrap();
            *calls += 1;
            *calls - 1
        };
        let (tx, rx) = mpsc::unbounded();
        handler(&req, n, tx);
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .header("x-call", n.to_string())
            .body(StreamBody::new(rx))
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    (layer.layer(inner), calls)
}

async fn send<S>(svc: &S, req: Request<Full<Bytes>>) -> Result<Reply, Error<Infallible>>
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<ResponseBody<GrpcBody>>,
            Error = Error<Infallible>,
        > + Clone,
{
    let response = svc.clone().oneshot(req).await?;
    Ok(read(response).await)
}

fn trailer(tx: &Sender, pairs: &[(&'static str, &'static str)]) {
    let mut trailers = HeaderMap::new();
    for (name, value) in pairs {
        trailers.append(*name, value.parse().unwrap());
    }
    tx.unbounded_send(Ok(Frame::trailers(trailers))).unwrap();
}

/// A unary success: the reply message in two chunks, then `grpc-status: 0`,
/// a `grpc-message` and custom trailing metadata, binary included.
fn ok_with_trailers() -> Handler {
    Arc::new(|_req, n, tx| {
        let reply = framed(format!("order #{n}").as_bytes());
        let (head, tail) = reply.split_at(3);
        tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(head))))
            .unwrap();
        tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(tail))))
            .unwrap();
        trailer(
            &tx,
            &[
                ("grpc-status", "0"),
                ("grpc-message", ""),
                ("x-order-id", "ord_1"),
                ("x-audit-bin", "AAEC/w"),
                ("x-audit-bin", "3q2-7w"),
            ],
        );
    })
}

fn full_reply_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    for (name, value) in [
        ("grpc-status", "0"),
        ("grpc-message", ""),
        ("x-order-id", "ord_1"),
        ("x-audit-bin", "AAEC/w"),
        ("x-audit-bin", "3q2-7w"),
    ] {
        t.append(name, value.parse().unwrap());
    }
    t
}

async fn full_response_is_replayed_with_its_trailers<St: Store>(store: St) {
    let (svc, calls) = serve(IdempotencyLayer::with_store(store), ok_with_trailers());
    let first = send(&svc, call(Some(KEY), b"\x0a\x03abc")).await.unwrap();
    assert!(!first.replayed());
    assert_eq!(
        first.trailers,
        Some(full_reply_trailers()),
        "the live reply"
    );
    assert_eq!(first.body, framed(b"order #0"));

    let again = send(&svc, call(Some(KEY), b"\x0a\x03abc")).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 1, "the retry did not run");
    assert!(again.replayed());
    assert_eq!(
        again.unmarked(),
        first,
        "status, headers, body bytes and trailers as they were"
    );
}

#[tokio::test]
async fn a_full_grpc_response_is_replayed_with_its_trailers() {
    full_response_is_replayed_with_its_trailers(MemoryStore::new()).await;
}

async fn trailers_only_error_is_replayed_identically<St: Store>(store: St) {
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        *counted.lock().unwrap() += 1;
        // The body ends with nothing in it: status in the headers only.
        let (_, rx) = mpsc::unbounded();
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "5")
            .header("grpc-message", "order%20not%20found")
            .header("grpc-status-details-bin", "CAUSD29yZGVyIG5vdCBmb3VuZA")
            .header("x-order-id", "ord_1")
            .body(StreamBody::new(rx))
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    // An explicit list that names none of the gRPC headers: a gRPC
    // response keeps them anyway, or the replay would have no status.
    let layer = IdempotencyLayer::with_store(store)
        .stored_headers([http::HeaderName::from_static("x-order-id")]);
    let svc = layer.layer(inner);
    let first = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap();
    assert_eq!(first.headers["grpc-status"], "5");
    assert!(first.body.is_empty() && first.trailers.is_none());

    let again = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 1, "the retry did not run");
    assert!(again.replayed());
    assert_eq!(again.unmarked(), first, "trailers-only, as it was");
}

#[tokio::test]
async fn a_trailers_only_error_is_replayed_identically() {
    trailers_only_error_is_replayed_identically(MemoryStore::new()).await;
}

/// The handler's answers, in order: `Some(code)` a trailers-only status,
/// `None` a full response whose trailers carry `trailer_code`.
async fn runs_twice_when(headers_code: Option<&'static str>, trailer_code: &'static str) -> usize {
    let calls = Arc::new(Mutex::new(0usize));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        *counted.lock().unwrap() += 1;
        let (tx, rx) = mpsc::unbounded();
        let mut builder = Response::builder().header("content-type", "application/grpc");
        match headers_code {
            Some(code) => builder = builder.header("grpc-status", code),
            None => {
                tx.unbounded_send(Ok(Frame::data(framed(b"partial"))))
                    .unwrap();
                trailer(&tx, &[("grpc-status", trailer_code)]);
            }
        }
        drop(tx);
        let response = builder.body(StreamBody::new(rx)).unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    let svc = IdempotencyLayer::new().layer(inner);
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let response = svc
            .clone()
            .oneshot(call(Some(KEY), b"\x0a\x01x"))
            .await
            .unwrap();
        replayed.push(response.headers().contains_key("idempotent-replayed"));
        // Read to the end, as a client does: the key is decided by then.
        response.into_body().collect().await.unwrap();
    }
    let n = *calls.lock().unwrap();
    assert_eq!(replayed, [false, n == 1]);
    n
}

#[tokio::test]
async fn a_grpc_status_that_asks_for_another_try_is_not_stored() {
    // Every gRPC answer is HTTP 200: the status decides, as a 5xx, 409 or
    // 429 does over HTTP. UNAVAILABLE, ABORTED, RESOURCE_EXHAUSTED,
    // CANCELLED, INTERNAL in the headers (trailers-only) run again.
    for code in ["14", "10", "8", "1", "13"] {
        assert_eq!(
            runs_twice_when(Some(code), "").await,
            2,
            "grpc-status {code} in the headers"
        );
    }
    // A final answer is stored and replayed: NOT_FOUND, ALREADY_EXISTS,
    // INVALID_ARGUMENT.
    for code in ["5", "6", "3"] {
        assert_eq!(
            runs_twice_when(Some(code), "").await,
            1,
            "grpc-status {code} in the headers"
        );
    }
}

#[tokio::test]
async fn a_full_response_whose_trailers_ask_for_another_try_releases_the_key() {
    assert_eq!(
        runs_twice_when(None, "14").await,
        2,
        "UNAVAILABLE in the trailers"
    );
    assert_eq!(runs_twice_when(None, "0").await, 1, "OK in the trailers");
    assert_eq!(
        runs_twice_when(None, "5").await,
        1,
        "NOT_FOUND in the trailers"
    );
}

#[tokio::test]
async fn the_same_key_with_another_message_is_key_reused() {
    let (svc, calls) = serve(IdempotencyLayer::new(), ok_with_trailers());
    send(&svc, call(Some(KEY), b"\x0a\x03abc")).await.unwrap();
    // One byte of the protobuf message differs.
    let err = send(&svc, call(Some(KEY), b"\x0a\x03abd"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch), "{err:?}");
    assert_eq!(*calls.lock().unwrap(), 1);
    let problem = err.into_problem();
    assert_eq!(problem.type_uri(), types::KEY_REUSED);
    assert_eq!(code(&problem), FAILED_PRECONDITION);
}

#[test]
fn the_fingerprint_covers_the_framed_message() {
    // What the layer fingerprints: the request, its body read whole.
    let print = |message: &[u8]| {
        let (parts, _) = call(Some(KEY), message).into_parts();
        Fingerprint::compute(
            &parts,
            &[],
            &framed(message),
            FingerprintMode::CanonicalJson,
        )
        .unwrap()
    };
    assert_eq!(print(b"\x0a\x03abc"), print(b"\x0a\x03abc"));
    assert_ne!(print(b"\x0a\x03abc"), print(b"\x0a\x03abd"));
    // The length prefix is part of it: the same bytes framed as a longer
    // message are another request.
    assert_ne!(print(b"\x0a\x03abc"), print(b"\x0a\x03abc\x00"));
}

#[tokio::test]
async fn the_same_key_while_in_flight_is_aborted() {
    let gate = Arc::new(Notify::new());
    let held: Arc<Mutex<Option<Sender>>> = Arc::default();
    let handler: Handler = {
        let held = held.clone();
        Arc::new(move |_req, _n, tx| *held.lock().unwrap() = Some(tx))
    };
    // The handler answers only once the gate opens.
    let inner = {
        let gate = gate.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let (tx, rx) = mpsc::unbounded();
            handler(&req, 0, tx);
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(rx))
                        .unwrap(),
                )
            }
        })
    };
    let svc = IdempotencyLayer::new().layer(inner);
    let first = tokio::spawn(svc.clone().oneshot(call(Some(KEY), b"\x0a\x01x")));
    tokio::task::yield_now().await;
    while held.lock().unwrap().is_none() {
        tokio::task::yield_now().await;
    }
    let err = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap_err();
    assert!(matches!(err, Error::InFlight { .. }), "{err:?}");
    let problem = err.into_problem();
    assert_eq!(problem.type_uri(), types::IN_FLIGHT);
    assert_eq!(code(&problem), ABORTED);
    gate.notify_one();
    drop(held.lock().unwrap().take());
    first.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_key_is_read_from_metadata() {
    let (svc, calls) = serve(IdempotencyLayer::new(), ok_with_trailers());
    let err = send(&svc, call(None, b"\x0a\x01x")).await.unwrap_err();
    assert!(matches!(err, Error::MissingKey), "{err:?}");
    assert_eq!(*calls.lock().unwrap(), 0);

    send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap();
    let again = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap();
    assert!(again.replayed(), "the metadata key found the record");
    let other = send(&svc, call(Some("another-key"), b"\x0a\x01x"))
        .await
        .unwrap();
    assert!(!other.replayed());
    assert_eq!(*calls.lock().unwrap(), 2);

    // Two `idempotency-key` entries: refused, not guessed.
    let mut twice = call(Some(KEY), b"\x0a\x01x");
    twice
        .headers_mut()
        .append("idempotency-key", "second".parse().unwrap());
    let err = send(&svc, twice).await.unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err:?}");
}

#[tokio::test]
async fn a_caller_key_from_metadata_scopes_the_key() {
    let layer = IdempotencyLayer::new().per(Header::api_key());
    let (svc, calls) = serve(layer, ok_with_trailers());
    let alice = send(&svc, call_as("k-alice", Some(KEY), b"\x0a\x01x"))
        .await
        .unwrap();
    let bob = send(&svc, call_as("k-bob", Some(KEY), b"\x0a\x01x"))
        .await
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 2, "each caller runs once");
    assert!(!bob.replayed());
    assert_eq!(bob.body, framed(b"order #1"));

    let alice_again = send(&svc, call_as("k-alice", Some(KEY), b"\x0a\x01x"))
        .await
        .unwrap();
    let bob_again = send(&svc, call_as("k-bob", Some(KEY), b"\x0a\x01x"))
        .await
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 2, "each retry replays its own");
    assert_eq!(alice_again.unmarked(), alice);
    assert_eq!(bob_again.unmarked(), bob);

    let mut anonymous = call(Some(KEY), b"\x0a\x01x");
    anonymous.headers_mut().remove("x-api-key");
    let err = send(&svc, anonymous).await.unwrap_err();
    assert!(matches!(err, Error::MissingCallerKey), "{err:?}");
}

/// A handler whose body the test writes: the first data chunk is sent,
/// the rest waits for the test.
fn held_body(held: Arc<Mutex<Option<Sender>>>) -> Handler {
    Arc::new(move |_req, _n, tx| {
        tx.unbounded_send(Ok(Frame::data(framed(b"partial"))))
            .unwrap();
        *held.lock().unwrap() = Some(tx);
    })
}

async fn wait_for(held: &Arc<Mutex<Option<Sender>>>) -> Sender {
    loop {
        if let Some(tx) = held.lock().unwrap().take() {
            return tx;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_call_dropped_before_the_trailers_is_not_retained() {
    let held: Arc<Mutex<Option<Sender>>> = Arc::default();
    let layer = IdempotencyLayer::new().on_cancel(OnCancel::Release);
    let (svc, calls) = serve(layer, held_body(held.clone()));
    let mut first = Box::pin(svc.clone().oneshot(call(Some(KEY), b"\x0a\x01x")));
    // Polled until the handler answered and the layer read the first chunk.
    let tx = tokio::select! {
        biased;
        _ = &mut first => panic!("the body has not ended"),
        tx = wait_for(&held) => tx,
    };
    assert!((&mut first).now_or_never().is_none());
    drop(first); // the client hangs up before the trailers
    // The trailers come too late: no one reads them any more.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    assert!(tx.unbounded_send(Ok(Frame::trailers(trailers))).is_err());
    tokio::task::yield_now().await;

    // The handler answered, so it never runs again; its response was not
    // read whole, so it is not kept: a record without trailers would
    // replay as a call with no status.
    let err = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap_err();
    assert!(matches!(err, Error::NotRetained), "{err:?}");
    assert_eq!(*calls.lock().unwrap(), 1);
    let problem = err.into_problem();
    assert_eq!(code(&problem), FAILED_PRECONDITION);
}

#[tokio::test]
async fn a_detached_call_dropped_before_the_trailers_still_keeps_them() {
    let held: Arc<Mutex<Option<Sender>>> = Arc::default();
    let layer = IdempotencyLayer::new(); // OnCancel::Detach
    let (svc, calls) = serve(layer, held_body(held.clone()));
    let mut first = Box::pin(svc.clone().oneshot(call(Some(KEY), b"\x0a\x01x")));
    let tx = tokio::select! {
        biased;
        _ = &mut first => panic!("the body has not ended"),
        tx = wait_for(&held) => tx,
    };
    drop(first); // the run goes on on a task of its own
    let err = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap_err();
    assert!(matches!(err, Error::InFlight { .. }), "{err:?}");
    tx.unbounded_send(Ok(Frame::data(framed(b"rest")))).unwrap();
    trailer(&tx, &[("grpc-status", "0"), ("x-order-id", "ord_1")]);
    drop(tx);
    let again = loop {
        match send(&svc, call(Some(KEY), b"\x0a\x01x")).await {
            Ok(reply) => break reply,
            Err(Error::InFlight { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(*calls.lock().unwrap(), 1);
    assert!(again.replayed());
    let mut body = BytesMut::new();
    body.extend_from_slice(&framed(b"partial"));
    body.extend_from_slice(&framed(b"rest"));
    assert_eq!(again.body, body.freeze());
    let trailers = again.trailers.expect("trailers replayed");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-order-id"], "ord_1");
}

#[tokio::test]
async fn a_body_that_fails_before_the_trailers_is_not_retained() {
    let handler: Handler = Arc::new(|_req, _n, tx| {
        tx.unbounded_send(Ok(Frame::data(framed(b"partial"))))
            .unwrap();
        tx.unbounded_send(Err("upstream reset".into())).unwrap();
    });
    let (svc, calls) = serve(IdempotencyLayer::new(), handler);
    let response = svc
        .clone()
        .oneshot(call(Some(KEY), b"\x0a\x01x"))
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(
        body.frame().await.unwrap().is_err(),
        "the client sees it fail"
    );
    let err = send(&svc, call(Some(KEY), b"\x0a\x01x")).await.unwrap_err();
    assert!(matches!(err, Error::NotRetained), "{err:?}");
    assert_eq!(*calls.lock().unwrap(), 1);
}

/// What a store keeps of trailers: all of them, in order, binary values
/// too; a response without trailers stays without.
async fn trailers_survive_the_store<S: Store>(store: S, key: &str) {
    let fp = Fingerprint::from_slice(&[7; 32]).unwrap();
    for (suffix, trailers) in [("with", Some(full_reply_trailers())), ("without", None)] {
        let key = format!("{key}-{suffix}");
        let Claim::Claimed(lease) = store
            .claim(&key, &fp, 1, Duration::from_secs(10))
            .await
            .unwrap()
        else {
            panic!("free key");
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let mut response = StoredResponse::new(StatusCode::OK, headers, framed(b"order"));
        if let Some(t) = trailers.clone() {
            response = response.with_trailers(t);
        }
        let response = Arc::new(response);
        let completion = Completion::Retained(response.clone());
        assert!(
            store
                .complete(&key, lease, completion, Duration::from_secs(60))
                .await
                .unwrap()
        );
        match store
            .claim(&key, &fp, 2, Duration::from_secs(10))
            .await
            .unwrap()
        {
            Claim::Existing(Record::Completed {
                response: Some(kept),
                ..
            }) => {
                assert_eq!(kept.trailers, trailers);
                assert_eq!(kept, response);
            }
            other => panic!("expected the completed record, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_memory_store_keeps_trailers() {
    trailers_survive_the_store(MemoryStore::new(), "t").await;
}

/// Trailers count toward the memory store's byte budget: a response whose
/// body fits but whose trailers pass it is recorded as not retained.
#[tokio::test]
async fn the_memory_store_counts_trailers_in_its_byte_budget() {
    let store = MemoryStore::new().max_bytes(std::num::NonZeroUsize::new(64).unwrap());
    let fp = Fingerprint::from_slice(&[7; 32]).unwrap();
    for (key, trailer_len, kept) in [("small", 8, true), ("large", 64, false)] {
        let Claim::Claimed(lease) = store
            .claim(key, &fp, 1, Duration::from_secs(10))
            .await
            .unwrap()
        else {
            panic!("free key");
        };
        let mut trailers = HeaderMap::new();
        let value = "x".repeat(trailer_len);
        trailers.insert("grpc-message", value.parse().unwrap());
        let response = StoredResponse::new(StatusCode::OK, HeaderMap::new(), framed(b"order"))
            .with_trailers(trailers);
        let completion = Completion::Retained(Arc::new(response));
        store
            .complete(key, lease, completion, Duration::from_secs(60))
            .await
            .unwrap();
        match store
            .claim(key, &fp, 2, Duration::from_secs(10))
            .await
            .unwrap()
        {
            Claim::Existing(Record::Completed { response, .. }) => {
                assert_eq!(response.is_some(), kept, "{key}");
            }
            other => panic!("expected the completed record, got {other:?}"),
        }
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::support::RedisServer;
    use palisade::idempotency::RedisStore;

    async fn store(redis: &RedisServer) -> RedisStore {
        RedisStore::connect(&redis.url())
            .await
            .expect("connect")
            .timeout(Duration::from_millis(500))
    }

    #[tokio::test]
    async fn redis_keeps_trailers_and_a_record_without_them_does_not_grow() {
        let Some(redis) = RedisServer::start_or_skip("redis_keeps_trailers") else {
            return;
        };
        trailers_survive_the_store(store(&redis).await, "t").await;
        // Only a response with trailers has the field: one without is
        // written (and read) as records always were.
        assert_eq!(redis.cli(&["HEXISTS", "palisade:idem:{t-with}", "tr"]), "1");
        assert_eq!(
            redis.cli(&["HEXISTS", "palisade:idem:{t-without}", "tr"]),
            "0"
        );
    }

    #[tokio::test]
    async fn redis_replays_a_full_grpc_response_with_its_trailers() {
        let Some(redis) = RedisServer::start_or_skip("redis_replays_grpc_trailers") else {
            return;
        };
        full_response_is_replayed_with_its_trailers(store(&redis).await).await;
    }

    #[tokio::test]
    async fn redis_replays_a_trailers_only_error_identically() {
        let Some(redis) = RedisServer::start_or_skip("redis_replays_trailers_only") else {
            return;
        };
        trailers_only_error_is_replayed_identically(store(&redis).await).await;
    }
}
