//! The adaptive limiter service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower_service::Service;

use super::algorithm::Sample;
use super::config::Config;
use super::error::Error;
use crate::load_shed::{Priority, PriorityExtractor, Shed, Uniform};

/// Holds a permit of the shared limit for each request while the inner
/// service runs it, and teaches the limit's algorithm how long each took.
///
/// A request that completes (with a response or an inner error, which
/// counts as dropped) is one [`Sample`]: its latency from admission to
/// response, queue time excluded, and the requests in flight when it was
/// admitted. A request whose future is dropped before it completes releases
/// its permit and teaches nothing. `NeverShed` requests pass uncounted and
/// teach nothing either. `poll_ready` is the inner service's: the decision
/// is made in `call`, and a refusal is an [`Error::Shed`].
///
/// See the [module docs](super) for an example.
pub struct AdaptiveConcurrency<S, P = Uniform> {
    inner: S,
    config: Arc<Config<P>>,
}

impl<S, P> AdaptiveConcurrency<S, P> {
    pub(crate) fn new(inner: S, config: Arc<Config<P>>) -> Self {
        Self { inner, config }
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

impl<S: Clone, P> Clone for AdaptiveConcurrency<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for AdaptiveConcurrency<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("name", &self.config.observer.name())
            .field("limit", &self.config.shared.gate.limit())
            .finish_non_exhaustive()
    }
}

impl<S, P, Req> Service<Req> for AdaptiveConcurrency<S, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
    P: PriorityExtractor<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BoxFuture<'static, Result<S::Response, Error<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.config.back_pressure {
            ready!(self.config.shared.gate.poll_capacity(cx));
        }
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The readied service goes into the future; a clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let priority = config.priority.priority(&req);
        Box::pin(async move {
            let shared = &config.shared;
            let permit = match shared.gate.acquire(priority).await {
                Ok(permit) => permit,
                Err(reason) => {
                    config.observer.shed(priority, reason);
                    return Err(Error::Shed(Shed::new(reason, priority, config.retry_after)));
                }
            };
            config.observer.admitted(priority);
            if priority == Priority::NeverShed {
                return inner.call(req).await.map_err(Error::Inner);
            }
            let in_flight = shared.gate.in_flight();
            let admitted = Instant::now();
            let response = inner.call(req).await;
            let sample = Sample::new(admitted.elapsed(), in_flight, response.is_err());
            // Learnt before the permit goes, so a raised limit and the freed
            // permit reach the queue together.
            shared.learn(sample, &config.observer);
            drop(permit);
            response.map_err(Error::Inner)
        })
    }
}
