//! The bodies of the idempotency layer: the request body it reads whole,
//! the response body it hands back.

use std::collections::VecDeque;
use std::fmt;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::BoxError;

/// Why [`read_body`] gave up.
pub(crate) enum ReadError {
    TooLarge,
    Failed(BoxError),
}

/// The whole body, refused past `limit` bytes: one chunk (the common case:
/// `Full`, a small axum body) is handed on as it is, without a copy.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut first = Bytes::new();
    let mut rest: Option<BytesMut> = None;
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Failed(e.into()))?;
        // Trailers do not enter the fingerprint and are not handed on.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len = data.remaining();
        if len == 0 {
            continue;
        }
        size = size.saturating_add(len);
        if size > limit {
            return Err(ReadError::TooLarge);
        }
        match &mut rest {
            None if first.is_empty() => first = data.copy_to_bytes(len),
            None => {
                let mut buf = BytesMut::with_capacity(size);
                buf.extend_from_slice(&first);
                buf.put(data);
                rest = Some(buf);
            }
            Some(buf) => buf.put(data),
        }
    }
    Ok(rest.map_or(first, BytesMut::freeze))
}

/// The response body of [`Idempotency`](super::Idempotency): the inner
/// service's body untouched, a buffered copy of it, or a replayed one.
pub struct ResponseBody<B> {
    frames: VecDeque<Frame<Bytes>>,
    error: Option<BoxError>,
    rest: Option<Pin<Box<B>>>,
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("buffered_frames", &self.frames.len())
            .field("streaming", &self.rest.is_some())
            .finish()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            frames: VecDeque::new(),
            error: None,
            rest: Some(Box::pin(body)),
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        let mut frames = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            frames.push_back(Frame::data(bytes));
        }
        Self::buffered(frames)
    }

    /// A stored body: its bytes, then its trailers, if it had any.
    pub(crate) fn replayed(bytes: Bytes, trailers: Option<HeaderMap>) -> Self {
        let mut frames = VecDeque::with_capacity(2);
        if !bytes.is_empty() {
            frames.push_back(Frame::data(bytes));
        }
        if let Some(trailers) = trailers {
            frames.push_back(Frame::trailers(trailers));
        }
        Self::buffered(frames)
    }

    pub(crate) fn buffered(frames: VecDeque<Frame<Bytes>>) -> Self {
        Self {
            frames,
            error: None,
            rest: None,
        }
    }

    /// Frames already read, then the rest of the body.
    pub(crate) fn chain(frames: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>>) -> Self {
        Self {
            frames,
            error: None,
            rest: Some(rest),
        }
    }

    /// Frames already read, then the error the body failed with.
    pub(crate) fn failed(frames: VecDeque<Frame<Bytes>>, error: BoxError) -> Self {
        Self {
            frames,
            error: Some(error),
            rest: None,
        }
    }
}

impl<B> crate::problem::FromBytes for ResponseBody<B> {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match this.rest.as_mut() {
            Some(rest) => rest
                .as_mut()
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(Into::into))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                // A body may claim any bound: past u64::MAX, say nothing.
                out.set_lower(hint.lower().saturating_add(buffered));
                if let Some(upper) = hint.upper().and_then(|u| u.checked_add(buffered)) {
                    out.set_upper(upper);
                }
                out
            }
        }
    }
}
