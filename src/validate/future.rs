//! Response futures of [`ValidateRequest`](super::ValidateRequest).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::Error;

pin_project! {
    /// Response future of a [`Passthrough`](super::Passthrough) validation:
    /// the inner service's future, or a rejection ready at once.
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        Inner { #[pin] future: F },
        Rejected { error: Option<Error<E>> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(error: Error<E>) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Error::Inner))
            }
            KindProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("future polled after completion")))
            }
        }
    }
}

/// Response future of a [`Json`](super::Json) validation: reads the body,
/// then calls the inner service.
pub type JsonFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, Error<E>>> + Send>>;
