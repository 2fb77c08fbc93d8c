//! The response future of the [`Retry`](super::Retry) service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
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

type Answer<S, Req> = Result<<S as Service<Req>>::Response, Error<<S as Service<Req>>::Error>>;

/// The state of a [`ResponseFuture`] serving `S`.
type Stage<S, Req> = State<<S as Service<Req>>::Future, BoxFuture<'static, Answer<S, Req>>>;

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
        state: State<S::Future, BoxFuture<'static, Answer<S, Req>>>,
        rest: Rest<S, C, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // The first attempt, without a timer.
        Plain { #[pin] future: F },
        // The first attempt, against a timer (boxed: a timer is large, and
        // the future is moved a few times before it is polled).
        Timed { #[pin] future: F, sleep: Pin<Box<Sleep>>, budget: Duration },
        // The attempts after the first.
        Retrying { future: B },
        // The request's deadline had passed: no attempt.
        Expired,
        Finished,
    }
}

/// What a retry needs, kept beside the first attempt.
pub(crate) struct Rest<S, C, Req> {
    /// A clone of the inner service, for the retries; `None` when there
    /// will be none.
    pub(crate) spare: Option<S>,
    /// The copy of the request to send again, taken before the first
    /// attempt's deadline was written; `None` when it cannot be sent again.
    pub(crate) replay: Option<Req>,
    pub(crate) config: Option<Arc<Config<C>>>,
    /// When the first attempt started, if the clock was read.
    pub(crate) started: Stamp,
}

/// An instant as nanoseconds since the layer's epoch, or unknown: eight
/// aligned bytes where an `Option<Instant>` would take sixteen, which
/// keeps the future small and cheap to move.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(u64);

impl Stamp {
    pub(crate) const UNKNOWN: Self = Self(u64::MAX);

    pub(crate) fn at(epoch: Instant, instant: Instant) -> Self {
        let nanos = instant.saturating_duration_since(epoch).as_nanos();
        Self(
            u64::try_from(nanos)
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1),
        )
    }

    pub(crate) fn instant(self, epoch: Instant) -> Option<Instant> {
        (self.0 != u64::MAX).then(|| add(epoch, Duration::from_nanos(self.0)))
    }
}

impl<S, C, Req> fmt::Debug for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retrying", &matches!(self.state, State::Retrying { .. }))
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> ResponseFuture<S, C, Req>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn first(
        future: S::Future,
        timer: Option<(Instant, Duration)>,
        rest: Rest<S, C, Req>,
    ) -> Self {
        let state = match timer {
            Some((at, budget)) => State::Timed {
                future,
                sleep: Box::pin(tokio::time::sleep_until(at)),
                budget,
            },
            None => State::Plain { future },
        };
        Self { state, rest }
    }

    /// The request's deadline had passed: no attempt.
    pub(crate) fn expired(config: Arc<Config<C>>) -> Self {
        Self {
            state: State::Expired,
            rest: Rest {
                spare: None,
                replay: None,
                config: Some(config),
                started: Stamp::UNKNOWN,
            },
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

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Only the common case inline: a plain first attempt. The other
        // states are polled out of line, which keeps this path short and
        // its answer out of the merge with theirs.
        let mut this = self.as_mut().project();
        let StateProj::Plain { future } = this.state.as_mut().project() else {
            return self.poll_other(cx);
        };
        let result = ready!(future.poll(cx));
        // The first attempt's future is done with: drop it now.
        this.state.set(State::Finished);
        let rest = this.rest;
        let config = rest.config.take().expect("future polled after completion");
        let verdict = config.classifier.classify(&result);
        // The common case in place: nothing moves, nothing is cloned.
        if verdict == Verdict::Done {
            rest.done(config);
            return Poll::Ready(result.map_err(Error::Inner));
        }
        rest.not_done(this.state, config, verdict, Ok(result), cx)
    }
}

impl<S, C, Req> ResponseFuture<S, C, Req>
where
    Req: Replay + DeadlineRequest + Send + 'static,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
{
    /// [`poll`](Future::poll) in every state but a plain first attempt.
    #[inline(never)]
    fn poll_other(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<S, Req>> {
        let mut this = self.project();
        let attempted = match this.state.as_mut().project() {
            StateProj::Retrying { future } => return future.as_mut().poll(cx),
            StateProj::Plain { future } => Ok(ready!(future.poll(cx))),
            StateProj::Timed {
                future,
                sleep,
                budget,
            } => match future.poll(cx) {
                Poll::Ready(result) => Ok(result),
                Poll::Pending => {
                    ready!(sleep.as_mut().poll(cx));
                    Err(*budget)
                }
            },
            StateProj::Expired => {
                this.state.set(State::Finished);
                let config = this.rest.config.take();
                let config = config.expect("future polled after completion");
                config.observer.attempt(Outcome::Deadline, 0, None);
                return Poll::Ready(Err(Error::Elapsed {
                    budget: Duration::ZERO,
                }));
            }
            StateProj::Finished => panic!("future polled after completion"),
        };
        // The first attempt's future is done with: drop it now.
        this.state.set(State::Finished);
        let rest = this.rest;
        let config = rest.config.take().expect("future polled after completion");
        let verdict = verdict(&config.classifier, &attempted);
        if verdict == Verdict::Done {
            rest.done(config);
            return Poll::Ready(answer(attempted));
        }
        rest.not_done(this.state, config, verdict, attempted, cx)
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
    /// A first attempt answered [`Verdict::Done`]: earn a token, report.
    #[inline]
    fn done(&self, config: Arc<Config<C>>) {
        config.budget.deposit();
        // The latency shows only in a TRACE event: no clock read, no
        // arithmetic, when it is off.
        let latency = if tracing::level_enabled!(tracing::Level::TRACE) {
            self.started.instant(config.epoch).map(|s| s.elapsed())
        } else {
            None
        };
        config.observer.attempt(Outcome::Done, 1, latency);
    }

    /// After a first attempt that was not [`Verdict::Done`]: its answer,
    /// or the first poll of the boxed retries, left in `state`.
    #[cold]
    #[inline(never)]
    fn not_done(
        &mut self,
        mut state: Pin<&mut Stage<S, Req>>,
        config: Arc<Config<C>>,
        verdict: Verdict,
        attempted: Attempted<S::Response, S::Error>,
        cx: &mut Context<'_>,
    ) -> Poll<Answer<S, Req>> {
        match self.after_first(config, verdict, attempted) {
            Ok(answer) => Poll::Ready(answer),
            Err(mut future) => {
                let polled = future.as_mut().poll(cx);
                state.set(State::Retrying { future });
                polled
            }
        }
    }

    /// The answer, or the boxed retries, after a first attempt that was
    /// not [`Verdict::Done`].
    #[allow(clippy::type_complexity)]
    #[cold]
    #[inline(never)]
    fn after_first(
        &mut self,
        config: Arc<Config<C>>,
        verdict: Verdict,
        attempted: Attempted<S::Response, S::Error>,
    ) -> Result<
        Result<S::Response, Error<S::Error>>,
        BoxFuture<'static, Result<S::Response, Error<S::Error>>>,
    > {
        let (spare, replay) = (self.spare.take(), self.replay.take());
        let started = self.started.instant(config.epoch);
        // The copy carries the request's deadline, as the caller set it.
        let deadline = replay
            .as_ref()
            .and_then(|r| r.deadline())
            .map(|d| d.instant());
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
        // The latest start that leaves the attempt its whole per-try
        // timeout: waiting for readiness past it would start an attempt
        // that the deadline cuts short.
        let latest_start = deadline.map(|deadline| match config.per_try_timeout {
            Some(per_try) => deadline.checked_sub(per_try).unwrap_or(deadline),
            None => deadline,
        });
        let ready = match latest_start {
            Some(latest_start) => match tokio::time::timeout_at(latest_start, ready).await {
                Ok(ready) => ready,
                Err(_) => {
                    // No time left to be let in: not an attempt.
                    config.observer.attempt(Outcome::Deadline, attempt, None);
                    return Err(Error::Elapsed {
                        budget: Duration::ZERO,
                    });
                }
            },
            None => ready.await,
        };
        if let Err(e) = ready {
            // A service that fails `poll_ready` is to be discarded (tower's
            // contract), and it is this side's failure, not the downstream's:
            // its error is the answer, as in tower's `Retry`, and it takes no
            // budget.
            config.observer.attempt(Outcome::Stopped, attempt, None);
            return Err(Error::Inner(e));
        }
        let next = request.replay();
        let started = Instant::now();
        let budget = config.attempt_budget(started, deadline);
        if let Some(per_try) = config.per_try_timeout {
            let at = add(started, per_try);
            request.set_deadline(Deadline::at(deadline.map_or(at, |d| d.min(at))));
        }
        let future = service.call(request);
        let attempted = match budget {
            Some(budget) => tokio::time::timeout(budget, future)
                .await
                .map_err(|_| budget),
            None => Ok(future.await),
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
