//! The bulkhead's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use pin_project_lite::pin_project;

use super::error::Error;

pin_project! {
    /// Response future for [`Bulkhead`](super::Bulkhead): the inner
    /// service's future holding its permit, or, when the request had to wait
    /// for one, the wait and then the call. The permit is released when the
    /// future completes or is dropped.
    pub struct ResponseFuture<F, P, T, E> {
        #[pin]
        kind: Kind<F, P, T, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P, T, E> {
        // A free permit was taken in `call`: no allocation.
        Admitted { #[pin] future: F, permit: Option<P> },
        // The request waits (queue, store round trip) first.
        Waiting { future: BoxFuture<'static, Result<T, Error<E>>> },
    }
}

impl<F, P, T, E> ResponseFuture<F, P, T, E> {
    pub(crate) fn admitted(future: F, permit: P) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(future: BoxFuture<'static, Result<T, Error<E>>>) -> Self {
        Self {
            kind: Kind::Waiting { future },
        }
    }
}

impl<F, P, T, E> Future for ResponseFuture<F, P, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, permit } => {
                let output = std::task::ready!(future.poll(cx));
                // Released as soon as the inner service answers.
                drop(permit.take());
                Poll::Ready(output.map_err(Error::Inner))
            }
            KindProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, P, T, E> std::fmt::Debug for ResponseFuture<F, P, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
