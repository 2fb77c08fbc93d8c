//! The throttle service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::config::Shared;
use super::error::Error;
use super::future::ResponseFuture;
use super::schedule::{Admit, Limit, add};
use crate::timeout::DeadlineRequest;

/// Sends each call when the upstream allows it: at once while it sets no
/// limit, after its `Retry-After` or quota reset, paced by its remaining
/// quota; refuses a call whose wait does not fit its
/// [`Deadline`](crate::timeout::Deadline) or the maximum wait.
///
/// Waiting calls go first come, first served; a dropped one gives its
/// place back. Clones share the schedule. `poll_ready` is the inner
/// service's: the wait depends on each request's deadline, so it happens
/// in the response future (the readied inner service goes with it, a clone
/// stays behind, and it is asked again for readiness when the wait ends:
/// what it decided before the wait, a breaker's admission, may be stale).
///
/// See the [module docs](super) for an example.
pub struct Throttle<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Throttle<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
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

impl<S: Clone> Clone for Throttle<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Throttle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.observer.name())
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB> Service<Request<B>> for Throttle<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
{
    type Response = Response<ResB>;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let now = Instant::now();
        if let Some(adaptive) = &shared.adaptive
            && let Some(probability) = adaptive.reject(now)
        {
            shared.observer.rejected(probability);
            return ResponseFuture::refused(Error::Rejected, self.shared.clone());
        }
        let limit = Limit {
            max: add(now, shared.max_wait),
            deadline: req.deadline().map(|d| d.instant()),
        };
        match shared.schedule.admit(now, limit) {
            Admit::Now => {
                shared.observer.sent();
                ResponseFuture::calling(self.inner.call(req), self.shared.clone(), now)
            }
            Admit::Refuse(retry_after) => {
                shared.observer.throttled(Duration::ZERO, retry_after);
                ResponseFuture::refused(Error::Throttled { retry_after }, self.shared.clone())
            }
            Admit::Wait(ticket) => {
                // The readied service goes into the future; a clone stays.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(inner, req, self.shared.clone(), ticket, limit, now)
            }
        }
    }
}
