//! The hedge service.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::Error;
use super::config::Shared;
use super::future::{Hedging, ResponseFuture};
use crate::attempt::{Classify, Replay};

/// Sends a hedge of a slow request and returns the first answer.
///
/// Built by [`HedgeLayer`](super::HedgeLayer). See the [module docs](super)
/// for an example.
#[derive(Debug)]
pub struct Hedge<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Hedge<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> Hedge<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The name of this layer in metrics and tracing.
    pub fn name(&self) -> &str {
        self.shared.observer.name()
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

impl<S, C, Req> Service<Req> for Hedge<S, C>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    Req: Replay,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        let started = Instant::now();
        let mut not_replayable = false;
        // The cheap checks first: the copy of the request is made only when
        // a hedge could be sent.
        let hedging = if shared.max_hedges > 0
            && let Some(delay) = shared.stats.delay(started)
            && shared.budget.can_withdraw()
        {
            match req.replay() {
                Some(spare) => Some(Hedging::new(spare, self.inner.clone(), started, delay)),
                None => {
                    not_replayable = true;
                    None
                }
            }
        } else {
            None
        };
        ResponseFuture::new(
            self.inner.call(req),
            hedging,
            self.shared.clone(),
            started,
            not_replayable,
        )
    }
}
