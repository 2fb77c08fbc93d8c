//! The response future of [`Hedge`](super::Hedge): the race between the
//! first attempt and its hedges.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::Error;
use super::config::Shared;
use super::observe::Answered;
use crate::attempt::{Classify, Replay, Verdict};

/// A deadline `delay` after `from`, saturating far in the future.
fn after(from: Instant, delay: Duration) -> Instant {
    // tokio's own "never": 30 years.
    from.checked_add(delay)
        .unwrap_or_else(|| from + Duration::from_secs(86_400 * 365 * 30))
}

pin_project! {
    /// One hedge, tagged with its attempt number (1 for the first hedge).
    struct Tagged<F> {
        #[pin]
        future: F,
        attempt: u32,
    }
}

impl<F: Future> Future for Tagged<F> {
    type Output = (u32, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.future.poll(cx).map(|out| (*this.attempt, out))
    }
}

/// Where the next hedge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the timer.
    Waiting,
    /// The timer fired and the budget had tokens: waiting for the service.
    Readying,
    /// No more hedges for this request.
    Idle,
}

/// What a request that may be hedged carries: a spare copy of the request,
/// a clone of the service, and the hedges in flight.
pub(crate) struct Hedging<S: Service<Req>, Req> {
    spare: Option<Req>,
    svc: S,
    delay: Duration,
    /// Hedge decisions made, sent or refused.
    decided: u32,
    next_at: Instant,
    step: Step,
    /// Created with the first hedge, so a request answered in time
    /// allocates nothing.
    running: Option<FuturesUnordered<Tagged<S::Future>>>,
}

impl<S: Service<Req>, Req> Hedging<S, Req> {
    pub(crate) fn new(spare: Req, svc: S, started: Instant, delay: Duration) -> Self {
        Self {
            spare: Some(spare),
            svc,
            delay,
            decided: 0,
            next_at: after(started, delay),
            step: Step::Waiting,
            running: None,
        }
    }

    fn in_flight(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// The next decision one delay after `now`, if one is left.
    fn schedule(&mut self, now: Instant, max: u32) {
        if self.decided < max {
            self.next_at = after(now, self.delay);
            self.step = Step::Waiting;
        } else {
            self.step = Step::Idle;
        }
    }
}

pin_project! {
    #[project = PrimaryProj]
    enum Primary<F> {
        Running { #[pin] future: F },
        Finished,
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Off,
        Armed { #[pin] sleep: Sleep },
    }
}

pin_project! {
    /// Response future for [`Hedge`](super::Hedge).
    ///
    /// Dropping it drops every attempt still running.
    #[project = Proj]
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        primary: Primary<S::Future>,
        #[pin]
        timer: Timer,
        hedging: Option<Hedging<S, Req>>,
        shared: Arc<Shared<C>>,
        started: Instant,
        not_replayable: bool,
        // The answer if no other attempt does better, with its attempt
        // number and whether it was a refusal on this side (Stop): the last
        // failure, but never a refusal over the downstream's own answer.
        failed: Option<(Result<S::Response, S::Error>, u32, bool)>,
    }
    impl<S, Req, C> PinnedDrop for ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Dropped by the caller (a timeout above, a client gone) while
            // the first attempt ran: its latency is at least what it had
            // run. Kept only when that already passes the delay, so the
            // slow request stays among the slow ones; a shorter one says
            // nothing and would pull the delay down.
            if let Primary::Running { .. } = *this.primary {
                let shared = &**this.shared;
                let now = Instant::now();
                let ran = now.saturating_duration_since(*this.started);
                if shared.stats.delay(now).is_some_and(|delay| ran >= delay) {
                    record(shared, now, ran);
                }
            }
        }
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("name", &self.shared.observer.name())
            .field("started", &self.started)
            .field(
                "primary_running",
                &matches!(self.primary, Primary::Running { .. }),
            )
            .field(
                "hedges_running",
                &self
                    .hedging
                    .as_ref()
                    .and_then(|h| h.running.as_ref())
                    .map_or(0, FuturesUnordered::len),
            )
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    pub(crate) fn new(
        future: S::Future,
        hedging: Option<Hedging<S, Req>>,
        shared: Arc<Shared<C>>,
        started: Instant,
        not_replayable: bool,
    ) -> Self {
        Self {
            primary: Primary::Running { future },
            timer: Timer::Off,
            hedging,
            shared,
            started,
            not_replayable,
            failed: None,
        }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req> + Clone,
    Req: Replay,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            // The first attempt.
            if let PrimaryProj::Running { future } = this.primary.as_mut().project()
                && let Poll::Ready(result) = future.poll(cx)
            {
                this.primary.set(Primary::Finished);
                let now = Instant::now();
                let verdict = shared.classifier.classify(&result);
                // A refusal on this side says nothing of the downstream.
                if verdict != Verdict::Stop {
                    record(shared, now, now.saturating_duration_since(*this.started));
                }
                if verdict == Verdict::Done {
                    return Poll::Ready(finish(this, result, true, 0, now));
                }
                keep(this.failed, result, 0, verdict);
            }

            // The hedges.
            let mut won = None;
            if let Some(running) = this.hedging.as_mut().and_then(|h| h.running.as_mut()) {
                while let Poll::Ready(Some((attempt, result))) = running.poll_next_unpin(cx) {
                    let verdict = shared.classifier.classify(&result);
                    if verdict == Verdict::Done {
                        won = Some((result, attempt));
                        break;
                    }
                    keep(this.failed, result, attempt, verdict);
                }
            }
            if let Some((result, attempt)) = won {
                let now = Instant::now();
                if matches!(*this.primary, Primary::Running { .. }) {
                    // The first attempt is cancelled: it took at least this
                    // long, which keeps it among the slow ones (recording
                    // only answers would leave the slow ones out and pull
                    // the delay down).
                    record(shared, now, now.saturating_duration_since(*this.started));
                }
                return Poll::Ready(finish(this, result, true, attempt, now));
            }

            // Nothing left running: the last failure is the answer.
            let primary_running = matches!(*this.primary, Primary::Running { .. });
            if !primary_running && !this.hedging.as_ref().is_some_and(Hedging::in_flight) {
                let (result, attempt, _) =
                    this.failed.take().expect("future polled after completion");
                return Poll::Ready(finish(this, result, false, attempt, Instant::now()));
            }

            // The next hedge.
            let Some(hedging) = this.hedging.as_mut() else {
                return Poll::Pending;
            };
            match hedging.step {
                Step::Idle => return Poll::Pending,
                Step::Waiting => {
                    // Armed only now: a first attempt that answers at once
                    // registers no timer.
                    match this.timer.as_mut().project() {
                        TimerProj::Off => this.timer.set(Timer::Armed {
                            sleep: sleep_until(hedging.next_at),
                        }),
                        TimerProj::Armed { sleep } => {
                            if sleep.deadline() != hedging.next_at {
                                sleep.reset(hedging.next_at);
                            }
                        }
                    }
                    let TimerProj::Armed { sleep } = this.timer.as_mut().project() else {
                        unreachable!("armed above")
                    };
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    hedging.decided += 1;
                    if shared.budget.can_withdraw() {
                        hedging.step = Step::Readying;
                    } else {
                        let now = Instant::now();
                        shared.observer.exhausted(
                            hedging.decided,
                            now.saturating_duration_since(*this.started),
                        );
                        hedging.schedule(now, shared.max_hedges);
                    }
                }
                Step::Readying => {
                    match hedging.svc.poll_ready(cx) {
                        Poll::Pending => {
                            tracing::trace!(
                                layer = "hedge",
                                name = shared.observer.name(),
                                outcome = "waiting",
                                attempt = hedging.decided,
                                "hedge waiting for the service to be ready"
                            );
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(_)) => {
                            // A hedge is optional: the attempts in flight
                            // still answer.
                            tracing::debug!(
                                layer = "hedge",
                                name = shared.observer.name(),
                                attempt = hedging.decided,
                                "hedge not sent: the service failed to become ready"
                            );
                            hedging.step = Step::Idle;
                        }
                        Poll::Ready(Ok(())) => {
                            let now = Instant::now();
                            let elapsed = now.saturating_duration_since(*this.started);
                            let request = if hedging.decided < shared.max_hedges {
                                hedging.spare.as_ref().and_then(Replay::replay)
                            } else {
                                hedging.spare.take()
                            };
                            match request {
                                Some(request) if shared.budget.try_withdraw() => {
                                    let future = hedging.svc.call(request);
                                    hedging
                                        .running
                                        .get_or_insert_with(FuturesUnordered::new)
                                        .push(Tagged {
                                            future,
                                            attempt: hedging.decided,
                                        });
                                    shared
                                        .observer
                                        .sent(hedging.decided, elapsed, hedging.delay);
                                }
                                refused => {
                                    match refused {
                                        Some(_) => {
                                            shared.observer.exhausted(hedging.decided, elapsed);
                                        }
                                        None => hedging.decided = shared.max_hedges,
                                    }
                                    // The ready service may hold a slot (a
                                    // concurrency permit, a buffer's place)
                                    // that no call will use: a fresh clone
                                    // gives it back.
                                    hedging.svc = hedging.svc.clone();
                                }
                            }
                            hedging.schedule(now, shared.max_hedges);
                        }
                    }
                }
            }
            if hedging.step == Step::Idle {
                this.timer.set(Timer::Off);
            }
        }
    }
}

/// Records the first attempt's latency.
fn record<C>(shared: &Shared<C>, now: Instant, latency: Duration) {
    if let Some(delay) = shared.stats.record(now, latency) {
        shared.observer.delay(delay);
    }
}

/// Ends the race with `result` from `attempt`: the other attempts are
/// dropped here, not when the caller drops the future.
fn finish<S: Service<Req>, Req, C>(
    this: Proj<'_, S, Req, C>,
    result: Result<S::Response, S::Error>,
    done: bool,
    attempt: u32,
    now: Instant,
) -> Result<S::Response, Error<S::Error>> {
    let shared = &**this.shared;
    if done {
        // A retry above earns a budget it shares: the same success once.
        if !shared.budget.is_earned_by_retry() {
            shared.budget.deposit();
        }
    }
    let mut primary = this.primary;
    primary.set(Primary::Finished);
    *this.hedging = None;
    let mut timer = this.timer;
    timer.set(Timer::Off);
    let answered = if *this.not_replayable {
        Answered::NotReplayable
    } else if attempt == 0 {
        Answered::Primary
    } else {
        Answered::Hedge
    };
    shared.observer.answered(
        answered,
        attempt,
        now.saturating_duration_since(*this.started),
    );
    result.map_err(Error::Inner)
}

/// Keeps `result` as the answer if nothing better comes: a later failure
/// replaces an earlier one, but a refusal on this side (a hedge refused by a
/// breaker or a bulkhead below) never replaces the downstream's own failure,
/// whose `Retry-After` or status the caller needs.
fn keep<R>(failed: &mut Option<(R, u32, bool)>, result: R, attempt: u32, verdict: Verdict) {
    let refused = verdict == Verdict::Stop;
    if refused
        && failed
            .as_ref()
            .is_some_and(|(_, _, kept_refused)| !kept_refused)
    {
        return;
    }
    *failed = Some((result, attempt, refused));
}
