//! The response body of a gRPC breaker: records the call when its trailers
//! arrive.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Record;
use super::grpc::GrpcClassifier;

pin_project! {
    /// Response body of [`GrpcCircuitBreaker`](super::GrpcCircuitBreaker):
    /// the inner body, unchanged, that records the call by the `grpc-status`
    /// of its trailers when it ends (`INTERNAL` if it fails or ends without
    /// one). Dropped before its end, it records nothing and gives a
    /// half-open probe's permit back.
    pub struct GrpcBody<B> {
        #[pin]
        inner: B,
        record: Option<Record<GrpcClassifier>>,
    }
}

impl<B> GrpcBody<B> {
    /// A body whose call is recorded already (or not tracked).
    pub(crate) fn done(inner: B) -> Self {
        Self {
            inner,
            record: None,
        }
    }

    /// A body that records its call when it ends.
    pub(crate) fn tracked(inner: B, record: Record<GrpcClassifier>) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the inner body; the call it would have recorded is not.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

fn finish(record: &mut Option<Record<GrpcClassifier>>, code: u8) {
    if let Some(mut record) = record.take() {
        let outcome = record.classifier().outcome(code);
        record.finish_with(outcome);
    }
}

impl<B: Body> Body for GrpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.record.is_some() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        finish(this.record, GrpcClassifier::trailers_code(trailers));
                    }
                }
                Some(Err(_)) | None => finish(this.record, GrpcClassifier::BROKEN),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // Until the call is recorded, say there may be more, so the reader
        // polls to the end and the outcome is seen.
        self.record.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for GrpcBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcBody")
            .field("inner", &self.inner)
            .field("recorded", &self.record.is_none())
            .finish()
    }
}

/// A rejection's body (a [`ProblemLayer`](crate::problem::ProblemLayer)
/// above the breaker renders one): no call to record.
impl<B: crate::problem::FromBytes> crate::problem::FromBytes for GrpcBody<B> {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::done(B::from_bytes(bytes))
    }
}
