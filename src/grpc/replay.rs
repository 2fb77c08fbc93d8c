//! Makes a tonic client's calls replayable, so a retry or a hedge can send
//! them again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::Request;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tonic::Status;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::attempt::{IDEMPOTENCY_KEY, Replay, is_idempotent};

/// The default largest request body kept for replay: 1 MiB, grpc-java's
/// per-call retry buffer.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Keeps each request's body in memory, so a
/// [`RetryLayer`](crate::retry::RetryLayer) or a
/// [`HedgeLayer`](crate::hedge::HedgeLayer) below it can send the call
/// again.
///
/// tonic builds a request's body as a stream, read once: without this
/// layer, a tonic call is never retried nor hedged. Put it outermost on the
/// client's stack, the retry and the hedge below it, the `Channel` last:
///
/// ```text
/// let stack = ServiceBuilder::new()
///     .layer(ReplayableLayer::new())
///     .layer(RetryLayer::new(GrpcClassifier::new()))
///     .service(channel);
/// let mut client = GreeterClient::new(stack);
/// ```
///
/// A `Channel`'s error (`tonic::transport::Error`) is
/// [`Retryable`](crate::attempt::Retryable): a refused or reset connection
/// is retried (of the calls that may be sent again, below).
///
/// The layer reads what the body already holds, never waiting for more: a
/// unary call's message, or a streaming call's messages from an in-memory
/// stream, up to [`body_limit`](Self::body_limit) bytes. That body is sent
/// as one in-memory body and kept in the request's extensions, from which
/// the retry and the hedge copy it ([`Replay`]). A body that would make the
/// layer wait (a stream fed while the call runs, where the server may answer
/// before the client sends more), that is over the limit, or that carries
/// trailers is sent as it is, streamed, and never sent twice. This is never
/// an error.
///
/// # Which calls are sent again
///
/// Every gRPC call is a `POST`, so, as over HTTP, a buffered call is sent
/// again only when it carries an `idempotency-key` metadata entry
/// ([`IDEMPOTENCY_KEY`]): the server runs one key once. Set one per call
/// (`request.metadata_mut().insert("idempotency-key", ..)`) or for every
/// call with an [`IdempotencyKeyLayer`](crate::idempotency::IdempotencyKeyLayer)
/// between this layer and the retry. A stack whose every method is safe to
/// run twice (reads, or a server that deduplicates calls on its own) says so
/// with [`idempotent(true)`](Self::idempotent), as a gRPC service config
/// names the methods its retry and hedging policies cover.
///
/// Nothing between this layer and the retry should change the body: a copy
/// is the body this layer read.
///
/// See the [`Replayable`] service for a runnable example.
#[derive(Debug, Clone, Copy)]
pub struct ReplayableLayer {
    body_limit: usize,
    idempotent: bool,
}

impl ReplayableLayer {
    /// A layer that keeps bodies up to [`DEFAULT_BODY_LIMIT`] and replays
    /// only calls that carry an `idempotency-key`.
    pub const fn new() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            idempotent: false,
        }
    }

    /// The largest body kept for replay, in bytes (default
    /// [`DEFAULT_BODY_LIMIT`]); a larger one is sent once, streamed.
    #[must_use]
    pub const fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Whether every call through this layer is safe to run more than once,
    /// so it is replayed without an `idempotency-key` (default `false`).
    ///
    /// gRPC's own retry (gRFC A6) retries any method its service config
    /// names, trusting the codes it retries on (`UNAVAILABLE`: the call was
    /// not processed) and, for hedging, trusting the config's owner that the
    /// method is idempotent. Switch this on in the same case: the stack
    /// calls only methods you know are safe to repeat. A hedge sends a copy
    /// while the first call may be running, whatever its answer.
    #[must_use]
    pub const fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

impl Default for ReplayableLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ReplayableLayer {
    type Service = Replayable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Replayable {
            inner,
            layer: *self,
        }
    }
}

/// Keeps each request's body in memory so it can be sent again: the service
/// of a [`ReplayableLayer`].
///
/// ```
/// # #[cfg(feature = "retry")] {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use palisade::attempt::GrpcClassifier;
/// use palisade::grpc::ReplayableLayer;
/// use palisade::retry::RetryLayer;
/// use tonic::body::Body;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A server that is unavailable on the first call.
/// let calls = Arc::new(AtomicUsize::new(0));
/// let seen = calls.clone();
/// let server = service_fn(move |req: Request<Body>| {
///     let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
///     async move {
///         let message = req.into_body().collect().await.unwrap().to_bytes();
///         assert_eq!(&message[..], b"\0\0\0\0\x02hi");
///         let status = if first { tonic::Status::unavailable("restarting") } else { tonic::Status::ok("") };
///         Ok::<Response<Body>, std::convert::Infallible>(status.into_http())
///     }
/// });
///
/// let client = ServiceBuilder::new()
///     .layer(ReplayableLayer::new())
///     .layer(RetryLayer::new(GrpcClassifier::new()))
///     .service(server);
///
/// // What a tonic client sends: a POST whose body is a stream.
/// let call = Request::post("/greeter.Greeter/SayHello")
///     .header("content-type", "application/grpc")
///     .header("idempotency-key", "call-1")
///     .body(Body::new(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi"))))
///     .unwrap();
/// let response = client.oneshot(call).await.unwrap();
/// assert_eq!(response.headers()["grpc-status"], "0");
/// assert_eq!(calls.load(Ordering::SeqCst), 2, "sent again, the same message");
/// # }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Replayable<S> {
    inner: S,
    layer: ReplayableLayer,
}

impl<S> Replayable<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for Replayable<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The body is read here, without waiting: there is nothing to await,
        // so the inner service stays the one made ready and no future is
        // boxed.
        let (mut parts, body) = req.into_parts();
        let body = match read_ready(body, self.layer.body_limit) {
            Read::Whole(bytes) => {
                parts.extensions.insert(Buffered {
                    bytes: bytes.clone(),
                    idempotent: self.layer.idempotent,
                });
                Body::new(Full::new(bytes))
            }
            Read::Partial(prefixed) => {
                tracing::debug!(
                    limit = self.layer.body_limit,
                    "request body not buffered: sent once"
                );
                Body::new(prefixed)
            }
        };
        self.inner.call(Request::from_parts(parts, body))
    }
}

/// The body a [`Replayable`] read, in a request's extensions: the copy a
/// replay sends. Private, so no one else can claim bytes the body does not
/// hold.
#[derive(Debug, Clone)]
struct Buffered {
    bytes: Bytes,
    /// The layer's [`ReplayableLayer::idempotent`].
    idempotent: bool,
}

/// A tonic request is sent again only when a [`ReplayableLayer`] above the
/// retry or the hedge kept its body, and it is safe: its method is
/// idempotent, it carries an `idempotency-key` ([`IDEMPOTENCY_KEY`]), or the
/// layer was told every call is ([`ReplayableLayer::idempotent`]). The copy
/// has the same method, URI, version, headers, extensions and message bytes.
impl Replay for Request<Body> {
    fn replay(&self) -> Option<Self> {
        let buffered = self.extensions().get::<Buffered>()?;
        if !buffered.idempotent
            && !is_idempotent(self.method())
            && !self.headers().contains_key(IDEMPOTENCY_KEY)
        {
            return None;
        }
        let mut copy = Request::new(Body::new(Full::new(buffered.bytes.clone())));
        *copy.method_mut() = self.method().clone();
        *copy.uri_mut() = self.uri().clone();
        *copy.version_mut() = self.version();
        *copy.headers_mut() = self.headers().clone();
        *copy.extensions_mut() = self.extensions().clone();
        Some(copy)
    }
}

/// What [`read_ready`] found.
enum Read {
    /// The whole body, ended.
    Whole(Bytes),
    /// What was read, then the rest of the body as it comes.
    Partial(Prefixed),
}

/// Reads the frames `body` holds now, up to `limit` bytes of data.
///
/// Each frame is polled once, with a context that wakes no one: a body that
/// is not ready is not waited for (a bidirectional call could be waiting for
/// the server's answer before it sends more), it is sent on as it is. Its
/// next poll, by the transport, registers the transport's waker, so no
/// wake-up is lost.
fn read_ready(mut body: Body, limit: usize) -> Read {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let stopped = loop {
        if body.is_end_stream() {
            break None;
        }
        match body.frame().now_or_never() {
            Some(None) => break None,
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    len = len.saturating_add(data.len());
                    chunks.push(data);
                    if len > limit {
                        break Some(None);
                    }
                }
                // Trailers from a client: a full body cannot carry them.
                Err(trailers) => break Some(Some(Ok(trailers))),
            },
            Some(Some(Err(status))) => break Some(Some(Err(status))),
            // Not ready: stream the rest.
            None => break Some(None),
        }
    };
    match stopped {
        None => Read::Whole(concat(chunks)),
        Some(last) => {
            let mut queue: VecDeque<_> = chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
            // After an error a body is over: the rest is never polled.
            let rest = match &last {
                Some(Err(_)) => None,
                _ => Some(body),
            };
            queue.extend(last);
            Read::Partial(Prefixed { queue, rest })
        }
    }
}

/// The chunks as one, copied only if there are several.
fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            whole.freeze()
        }
    }
}

/// The frames already read, then the rest of the body.
#[derive(Debug)]
struct Prefixed {
    queue: VecDeque<Result<Frame<Bytes>, Status>>,
    rest: Option<Body>,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(frame) = this.queue.pop_front() {
            return Poll::Ready(Some(frame));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .queue
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(queued));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(queued));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunked(chunks: &[Vec<u8>]) -> Body {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c.clone()))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    proptest! {
        /// Whole up to the limit, streamed over it, and the same bytes sent
        /// either way.
        #[test]
        fn any_chunks_are_kept_within_the_limit_and_sent_intact(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..8),
            limit in 0usize..64,
        ) {
            let all: Vec<u8> = chunks.concat();
            match read_ready(chunked(&chunks), limit) {
                Read::Whole(bytes) => {
                    prop_assert!(all.len() <= limit);
                    prop_assert_eq!(&bytes[..], &all[..]);
                }
                Read::Partial(prefixed) => {
                    prop_assert!(all.len() > limit);
                    let sent = prefixed.collect().now_or_never().unwrap().unwrap().to_bytes();
                    prop_assert_eq!(&sent[..], &all[..]);
                }
            }
        }
    }

    #[tokio::test]
    async fn several_chunks_are_kept_as_one_and_trailers_are_streamed() {
        let chunks = futures::stream::iter(
            [&b"ab"[..], b"cd", b"e"].map(|c| Ok::<_, Status>(Frame::data(Bytes::from_static(c)))),
        );
        let body = Body::new(http_body_util::StreamBody::new(chunks));
        match read_ready(body, 5) {
            Read::Whole(bytes) => assert_eq!(&bytes[..], b"abcde"),
            Read::Partial(_) => panic!("5 bytes fit a limit of 5"),
        }

        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let frames = futures::stream::iter([
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let body = Body::new(http_body_util::StreamBody::new(frames));
        match read_ready(body, 100) {
            Read::Whole(_) => panic!("trailers cannot be replayed"),
            Read::Partial(prefixed) => {
                let collected = prefixed.collect().await.unwrap();
                assert_eq!(collected.trailers().unwrap()["x-t"], "1");
                assert_eq!(&collected.to_bytes()[..], b"ab");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_body_is_sent_with_its_error_and_not_read_further() {
        let frames = futures::stream::iter([
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"ab"))),
            Err(Status::cancelled("gone")),
            Ok(Frame::data(Bytes::from_static(b"never"))),
        ]);
        let body = Body::new(http_body_util::StreamBody::new(frames));
        let Read::Partial(prefixed) = read_ready(body, 100) else {
            panic!("an error is not a whole body");
        };
        assert!(prefixed.rest.is_none());
        let mut body = prefixed;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::Cancelled);
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }
}
