//! Turning chosen errors into a fallback response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Answers chosen errors of the inner service with a fallback response.
///
/// The function gets each error and returns `Ok(response)` to answer with a
/// fallback, or `Err(error)` to pass the error on. Put it outside a
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer) (and a timeout) to
/// serve a degraded answer while a dependency is down:
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Error, FallbackLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreakerLayer::new(Config::default());
/// breaker.handle().force_open();
/// let recommendations = ServiceBuilder::new()
///     // Recommendations unavailable: serve an empty list.
///     .layer(FallbackLayer::new(|err: Error<&'static str>| match err {
///         Error::Open { .. } => Ok(Vec::<String>::new()),
///         err => Err(err),
///     }))
///     .layer(breaker)
///     .service(service_fn(|_user: u64| async { Ok(vec!["book".to_owned()]) }));
/// assert_eq!(recommendations.oneshot(7).await.unwrap(), Vec::<String>::new());
/// # }
/// ```
///
/// The function is cloned into each response future: keep it cheap to clone.
#[derive(Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
}

impl<F> FallbackLayer<F> {
    /// A layer answering errors with `fallback`.
    pub fn new(fallback: F) -> Self {
        Self { fallback }
    }
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of [`FallbackLayer`].
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    fallback: F,
}

impl<S, F> Fallback<S, F> {
    /// Wraps `inner`, answering errors with `fallback`.
    pub fn new(inner: S, fallback: F) -> Self {
        Self { inner, fallback }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, Req> Service<Req> for Fallback<S, F>
where
    S: Service<Req>,
    F: Fn(S::Error) -> Result<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FallbackFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        FallbackFuture {
            future: self.inner.call(req),
            fallback: Some(self.fallback.clone()),
        }
    }
}

pin_project! {
    /// Response future of [`Fallback`].
    pub struct FallbackFuture<Fut, F> {
        #[pin]
        future: Fut,
        fallback: Option<F>,
    }
}

impl<Fut, F> fmt::Debug for FallbackFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, T, E> Future for FallbackFuture<Fut, F>
where
    Fut: Future<Output = Result<T, E>>,
    F: Fn(E) -> Result<T, E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let fallback = this
            .fallback
            .take()
            .expect("future polled after completion");
        Poll::Ready(result.or_else(fallback))
    }
}
