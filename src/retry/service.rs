//! The retry service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::config::{Config, add};
use super::error::Error;
use super::future::{ResponseFuture, Rest, Stamp};
use crate::attempt::{Classify, Replay};
use crate::timeout::{Deadline, DeadlineRequest};

/// Sends a failed request again, as its [`RetryLayer`](super::RetryLayer)
/// says.
///
/// See the [module docs](super) for an example.
pub struct Retry<S, C> {
    inner: S,
    config: Arc<Config<C>>,
}

impl<S, C> Retry<S, C> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<C>>) -> Self {
        Self { inner, config }
    }

    /// The name of this retry in metrics and tracing.
    pub fn name(&self) -> &str {
        self.config.observer.name()
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

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    Req: Replay + DeadlineRequest + Send + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        let config = &self.config;
        // The copy for a retry is taken before the request moves in.
        let replay = if config.max_attempts.get() > 1 {
            req.replay()
        } else {
            None
        };
        let carried = req.deadline();
        let deadline = carried.map(|d| d.instant());
        // The clock is read only when a deadline or a timeout needs it, or
        // for the latency of an event that DEBUG would show.
        let now = (deadline.is_some()
            || config.per_try_timeout.is_some()
            || tracing::level_enabled!(tracing::Level::DEBUG))
        .then(Instant::now);
        let timer = now.and_then(|now| {
            config
                .attempt_budget(now, deadline)
                .map(|budget| (add(now, budget), budget))
        });
        if let (Some(now), Some(deadline)) = (now, deadline)
            && deadline <= now
        {
            return ResponseFuture::expired(config.clone());
        }
        if let (Some(now), Some(per_try)) = (now, config.per_try_timeout) {
            let at = add(now, per_try);
            let at = Deadline::at(deadline.map_or(at, |d| d.min(at)));
            if carried != Some(at) {
                req.set_deadline(at);
            }
        }
        let rest = Rest {
            spare: replay.is_some().then(|| self.inner.clone()),
            replay,
            config: Some(config.clone()),
            started: now.map_or(Stamp::UNKNOWN, |now| Stamp::at(config.epoch, now)),
        };
        ResponseFuture::first(self.inner.call(req), timer, rest)
    }
}
