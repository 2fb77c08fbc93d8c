//! The response future of the [`Retry`](super::Retry) service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::backoff::Delays;
use super::config::{Config, add};
use super::error::Error;
use super::observe::Outcome;
use crate::attempt::{Classify, Replay, Verdict};
use crate::timeout::{Deadline, DeadlineRequest};

/// What one attempt gave: the service's result, or the time it had when it
/// ran out.
type Attempted<Res, E> = Result<Result<Res, E>, Duration>;

pin_project! {
    /// Response future for [`Retry`](super::Retry).
    ///
    /// The first attempt is polled in place, without allocating; only a
    /// retry moves the rest of the work into a boxed future.
    pub struct ResponseFuture<S, C, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        first: First<S::Future>,
        rest: Option<Rest<S, C, Req>>,
        retrying: Option<BoxFuture<'static, Result<S::Response, Error<S::Error>>>>,
    }
}

pin_project! {
    #[project = FirstProj]
    enum First<F> {
        Plain { #[pin] future: F },
        Timed { #[pin] future: tokio::time::Timeout<F>, budget: Duration },
        Expired,
        Finished,
    }
}

/// What a retry needs, kept beside the first attempt.
pub(crate) struct Rest<S, C, Req> {
    /// A clone of the inner service, for the retries; `None` when there
    /// will be none.
    pub(crate) spare: Option<S>,
    /// The copy of the request to send again; `None` when it cannot be.
    pub(crate) replay: Option<Req>,
    pub(crate) config: Arc<Config<C>>,
    pub(crate) deadline: Option<Instant>,
    /// When the first attempt started, if the clock was read.
    pub(crate) started: Option<Instant>,
}

impl<S, C, Req> fmt::Debug for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retrying", &self.retrying.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> ResponseFuture<S, C, Req>
where
    S: Service<Req>,
{
    pub(crate) fn first(
        future: S::Future,
        budget: Option<Duration>,
        rest: Rest<S, C, Req>,
    ) -> Self {
        let first = match budget {
            Some(budget) => First::Timed {
                future: tokio::time::timeout(budget, future),
                budget,
            },
            None => First::Plain { future },
        };
        Self {
            first,
            rest: Some(rest),
            retrying: None,
        }
    }

    /// The request's deadline had passed: no attempt.
    pub(crate) fn expired(config: Arc<Config<C>>) -> Self {
        Self {
            first: First::Expired,
            rest: Some(Rest {
                spare: None,
                replay: None,
                config,
                deadline: None,
                started: None,
            }),
            retrying: None,
        }
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
where
    Req: Replay + DeadlineRequest + Send + 'static,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
{
    type Output = Result<S::Response, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(retrying) = this.retrying.as_mut() {
            return retrying.as_mut().poll(cx);
        }
        let attempted = match this.first.as_mut().project() {
            FirstProj::Plain { future } => Ok(ready!(future.poll(cx))),
            FirstProj::Timed { future, budget } => match ready!(future.poll(cx)) {
                Ok(result) => Ok(result),
                Err(_) => Err(*budget),
            },
            FirstProj::Expired => {
                let rest = this.rest.take().expect("future polled after completion");
                this.first.set(First::Finished);
                rest.config.observer.attempt(Outcome::Deadline, 0, None);
                return Poll::Ready(Err(Error::Elapsed {
                    budget: Duration::ZERO,
                }));
            }
            FirstProj::Finished => panic!("future polled after completion"),
        };
        // The first attempt's future is done with: drop it now.
        this.first.set(First::Finished);
        let rest = this.rest.take().expect("future polled after completion");
        match rest.after_first(attempted) {
            Ok(answer) => Poll::Ready(answer),
            Err(retrying) => this.retrying.insert(retrying).as_mut().poll(cx),
        }
    }
}

fn verdict<C, Res, E>(classifier: &C, attempted: &Attempted<Res, E>) -> Verdict
where
    C: Classify<Res, E>,
{
    match attempted {
        Ok(result) => classifier.classify(result),
        Err(_) => Verdict::Retry { after: None },
    }
}

fn answer<Res, E>(attempted: Attempted<Res, E>) -> Result<Res, Error<E>> {
    match attempted {
        Ok(result) => result.map_err(Error::Inner),
        Err(budget) => Err(Error::Elapsed { budget }),
    }
}

impl<S, C, Req> Rest<S, C, Req>
where
    Req: Replay + DeadlineRequest + Send + 'static,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
{
    /// The answer, or the boxed retries.
    #[allow(clippy::type_complexity)]
    fn after_first(
        self,
        attempted: Attempted<S::Response, S::Error>,
    ) -> Result<
        Result<S::Response, Error<S::Error>>,
        BoxFuture<'static, Result<S::Response, Error<S::Error>>>,
    > {
        let Self {
            spare,
            replay,
            config,
            deadline,
            started,
        } = self;
        let verdict = verdict(&config.classifier, &attempted);
        let mut delays = None;
        let decided = config.decide(verdict, 1, replay.is_some(), deadline, &mut delays, started);
        match (decided, spare, replay) {
            (Ok(wait), Some(service), Some(request)) => Err(Box::pin(retry(
                service, request, config, deadline, delays, wait,
            ))),
            _ => Ok(answer(attempted)),
        }
    }
}

/// The attempts after the first: wait, send a copy, decide, until an answer.
async fn retry<S, C, Req>(
    mut service: S,
    mut request: Req,
    config: Arc<Config<C>>,
    deadline: Option<Instant>,
    mut delays: Option<Delays>,
    mut wait: Duration,
) -> Result<S::Response, Error<S::Error>>
where
    Req: Replay + DeadlineRequest,
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
{
    let mut attempt = 1;
    loop {
        attempt += 1;
        config.observer.wait(wait, attempt);
        tokio::time::sleep(wait).await;
        let ready = std::future::poll_fn(|cx| service.poll_ready(cx));
        let ready = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ready).await {
                Ok(ready) => ready,
                Err(_) => {
                    // No time left even to be let in: not an attempt.
                    config.observer.attempt(Outcome::Deadline, attempt, None);
                    return Err(Error::Elapsed {
                        budget: Duration::ZERO,
                    });
                }
            },
            None => ready.await,
        };
        let next = request.replay();
        let started = Instant::now();
        let budget = config.attempt_budget(started, deadline);
        let attempted = match ready {
            // A service that fails to get ready failed this attempt.
            Err(e) => Ok(Err(e)),
            Ok(()) => {
                let mut request = request;
                if let Some(per_try) = config.per_try_timeout {
                    let at = add(started, per_try);
                    request.set_deadline(Deadline::at(deadline.map_or(at, |d| d.min(at))));
                }
                let future = service.call(request);
                match budget {
                    Some(budget) => tokio::time::timeout(budget, future)
                        .await
                        .map_err(|_| budget),
                    None => Ok(future.await),
                }
            }
        };
        let verdict = verdict(&config.classifier, &attempted);
        match config.decide(
            verdict,
            attempt,
            next.is_some(),
            deadline,
            &mut delays,
            Some(started),
        ) {
            Ok(then) => {
                wait = then;
                request = next.expect("a replayable request");
            }
            Err(_) => return answer(attempted),
        }
    }
}
