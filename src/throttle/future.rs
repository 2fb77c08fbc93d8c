//! The throttle's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::config::Shared;
use super::error::Error;
use super::headers::Signals;
use super::schedule::{Limit, Turn};

pin_project! {
    /// Response future for [`Throttle`](super::Throttle): the wait for the
    /// upstream's schedule, if any, then the call, whose answer teaches the
    /// schedule. Dropped while waiting, it gives its place back.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B, S::Future, S::Error>,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B, F, E> {
        Calling { #[pin] future: F, sent_at: Instant },
        // Boxed: a call that need not wait does not carry (and move) the
        // request and the service in its future.
        Waiting { wait: Box<Wait<S, B>> },
        Refused { error: Option<Error<E>> },
    }
}

/// A call waiting for its turn.
struct Wait<S, B> {
    place: Place,
    sleep: Option<Pin<Box<Sleep>>>,
    inner: Option<S>,
    req: Option<Request<B>>,
    limit: Limit,
    since: Instant,
}

/// A waiting call's place in the schedule, given back when dropped.
struct Place {
    shared: Arc<Shared>,
    ticket: u64,
    done: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.done {
            self.shared.schedule.cancel(self.ticket);
        }
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn calling(future: S::Future, shared: Arc<Shared>, sent_at: Instant) -> Self {
        Self {
            kind: Kind::Calling { future, sent_at },
            shared,
        }
    }

    pub(crate) fn refused(error: Error<S::Error>, shared: Arc<Shared>) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
            shared,
        }
    }

    pub(crate) fn waiting(
        inner: S,
        req: Request<B>,
        shared: Arc<Shared>,
        ticket: u64,
        limit: Limit,
        since: Instant,
    ) -> Self {
        Self {
            kind: Kind::Waiting {
                wait: Box::new(Wait {
                    place: Place {
                        shared: shared.clone(),
                        ticket,
                        done: false,
                    },
                    sleep: None,
                    inner: Some(inner),
                    req: Some(req),
                    limit,
                    since,
                }),
            },
            shared,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Output = Result<Response<ResB>, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Calling { future, sent_at } => {
                    let result = std::task::ready!(future.poll(cx));
                    learn(this.shared, *sent_at, &result);
                    return Poll::Ready(result.map_err(Error::Inner));
                }
                KindProj::Refused { error } => {
                    return Poll::Ready(Err(error.take().expect("future polled after completion")));
                }
                KindProj::Waiting { wait } => {
                    let Wait {
                        place,
                        sleep,
                        inner,
                        req,
                        limit,
                        since,
                    } = &mut **wait;
                    // `done`: its turn came, it has left the line.
                    if !place.done {
                        match this.shared.schedule.turn(place.ticket, *limit, cx) {
                            Turn::Go => {
                                place.done = true;
                                this.shared
                                    .observer
                                    .waited(Instant::now().saturating_duration_since(*since));
                            }
                            Turn::Refuse(retry_after) => {
                                place.done = true;
                                let waited = Instant::now().saturating_duration_since(*since);
                                this.shared.observer.throttled(waited, retry_after);
                                this.kind.set(Kind::Refused { error: None });
                                return Poll::Ready(Err(Error::Throttled { retry_after }));
                            }
                            Turn::SleepUntil(at) => {
                                match sleep {
                                    Some(s) if s.deadline() == at => {}
                                    Some(s) => s.as_mut().reset(at),
                                    None => *sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                                }
                                let s = sleep.as_mut().expect("set above");
                                std::task::ready!(s.as_mut().poll(cx));
                                // Due: ask again (go, or leave if it no
                                // longer fits).
                                continue;
                            }
                        }
                    }
                    // The service was readied before the wait, and what it
                    // decided then may be stale (a breaker below that has
                    // opened since): it is asked again, which a ready
                    // service answers at once.
                    let service = inner.as_mut().expect("future polled after completion");
                    if let Err(e) = std::task::ready!(service.poll_ready(cx)) {
                        this.kind.set(Kind::Refused { error: None });
                        return Poll::Ready(Err(Error::Inner(e)));
                    }
                    let mut inner = inner.take().expect("future polled after completion");
                    let req = req.take().expect("future polled after completion");
                    let future = inner.call(req);
                    this.kind.set(Kind::Calling {
                        future,
                        sent_at: Instant::now(),
                    });
                }
            }
        }
    }
}

/// Teaches the schedule (and the adaptive throttle) what the answer says.
fn learn<ResB, E>(shared: &Shared, sent_at: Instant, result: &Result<Response<ResB>, E>) {
    let accepted = match result {
        Ok(response) => {
            let signals = Signals::read(response);
            let change = shared.schedule.learn(sent_at, &signals);
            shared.observer.learned(change);
            signals.accepted
        }
        Err(_) => false,
    };
    if let Some(adaptive) = &shared.adaptive {
        adaptive.record(Instant::now(), accepted);
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
