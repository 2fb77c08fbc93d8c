//! The response future of [`RateLimit`](super::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::Error;
use super::decision::Decision;
use super::headers::ResponseHeaders;
use super::limits::Limits;

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, Error<E>>> + Send + 'static>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    ///
    /// A store that decides at once (such as
    /// [`MemoryStore`](super::MemoryStore)) leaves only the inner call to
    /// wait for, with nothing allocated; a store that answers later (such as
    /// `RedisStore`) is awaited in a boxed future, and a rejection is ready
    /// at once.
    pub struct ResponseFuture<F, T, E, H> {
        #[pin]
        kind: Kind<F, T, E, H>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T, E, H> {
        Inner {
            #[pin]
            future: F,
            headers: Option<Headers<H>>,
        },
        Store {
            future: Boxed<T, E>,
        },
        Rejected {
            error: Option<Error<E>>,
        },
    }
}

/// What an allowed response gets once the inner service answers.
pub(crate) struct Headers<H> {
    pub(crate) headers: H,
    pub(crate) limits: Limits,
    pub(crate) decision: Decision,
}

impl<F, T, E, H> ResponseFuture<F, T, E, H> {
    pub(crate) fn inner(future: F, headers: Option<Headers<H>>) -> Self {
        Self {
            kind: Kind::Inner { future, headers },
        }
    }

    pub(crate) fn store(future: Boxed<T, E>) -> Self {
        Self {
            kind: Kind::Store { future },
        }
    }

    pub(crate) fn rejected(error: Error<E>) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, T, E, H> Future for ResponseFuture<F, T, E, H>
where
    F: Future<Output = Result<T, E>>,
    H: ResponseHeaders<T>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut response = ready!(future.poll(cx)).map_err(Error::Inner)?;
                if let Some(h) = headers.take() {
                    h.headers.apply(&mut response, &h.limits, &h.decision);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Store { future } => future.as_mut().poll(cx),
            KindProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("future polled after completion")))
            }
        }
    }
}

impl<F, T, E, H> fmt::Debug for ResponseFuture<F, T, E, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Store { .. } => "store",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
