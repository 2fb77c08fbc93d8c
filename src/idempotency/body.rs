//! The response body of the idempotency layer.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

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

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(bytes: Bytes) -> Self {
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
