//! The response future of the [`Timeout`](super::Timeout) service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::deadline::add;
use super::error::Error;
use super::observe::Observer;
use crate::clock::Stamp;

pin_project! {
    /// Response future for [`Timeout`](super::Timeout).
    ///
    /// The deadline is fixed by the call; the timer is created (and boxed)
    /// only if the inner future is not ready on its first poll, so an answer
    /// that is already there costs no timer and the future stays small. The
    /// inner future is dropped as soon as the budget runs out.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        // A per-request deadline, set by the call; a fixed budget's, set
        // when the timer is armed, from `start`.
        deadline: Option<Instant>,
        // A fixed budget's call, read on the cheapest clock.
        start: Option<Stamp>,
        budget: Duration,
        observer: &'static Observer,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Running { #[pin] future: F, sleep: Option<Pin<Box<Sleep>>> },
        // The deadline had passed before the call: the inner service was not called.
        Expired,
        // The budget header was malformed: the inner service was not called.
        Invalid { value: String },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        future: F,
        deadline: Option<Instant>,
        budget: Duration,
        observer: &'static Observer,
    ) -> Self {
        Self {
            state: State::Running {
                future,
                sleep: None,
            },
            deadline,
            start: None,
            budget,
            observer,
        }
    }

    /// A fixed budget, counted from `start` (the call).
    pub(crate) fn fixed(
        future: F,
        start: Stamp,
        budget: Duration,
        observer: &'static Observer,
    ) -> Self {
        Self {
            start: Some(start),
            ..Self::new(future, None, budget, observer)
        }
    }

    /// Refuses a request whose budget header `value` is malformed.
    #[cfg(feature = "grpc")]
    pub(crate) fn invalid(value: String, observer: &'static Observer) -> Self {
        Self {
            state: State::Invalid { value },
            deadline: None,
            start: None,
            budget: Duration::ZERO,
            observer,
        }
    }

    pub(crate) fn expired(deadline: Instant, observer: &'static Observer) -> Self {
        Self {
            state: State::Expired,
            deadline: Some(deadline),
            start: None,
            budget: Duration::ZERO,
            observer,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProj::Running { future, sleep } => {
                // The answer wins a tie with the deadline, as in tower.
                if let Poll::Ready(result) = future.poll(cx) {
                    this.state.set(State::Done);
                    this.observer.completed(*this.deadline, *this.budget);
                    return Poll::Ready(result.map_err(Error::Inner));
                }
                // Boxed: a call that is not answered at once waits for I/O,
                // which dwarfs one allocation, and the future stays small.
                let sleep = sleep.get_or_insert_with(|| {
                    let (budget, start) = (*this.budget, *this.start);
                    let deadline = *this.deadline.get_or_insert_with(|| {
                        let start = start.map_or_else(Instant::now, Stamp::to_instant);
                        add(start, budget)
                    });
                    Box::pin(tokio::time::sleep_until(deadline))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Drop the inner future now, not when the caller drops us.
                this.state.set(State::Done);
            }
            StateProj::Expired => this.state.set(State::Done),
            StateProj::Invalid { value } => {
                let value = std::mem::take(value);
                this.state.set(State::Done);
                return Poll::Ready(Err(Error::InvalidBudget { value }));
            }
            StateProj::Done => panic!("future polled after completion"),
        }
        let budget = *this.budget;
        this.observer.timed_out(budget);
        Poll::Ready(Err(Error::Elapsed { budget }))
    }
}
