//! Response future of the circuit breaker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::classify::Classify;
use super::error::Error;
use super::state::Outcome;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker) and
    /// [`KeyedCircuitBreaker`](super::KeyedCircuitBreaker).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Tracked { #[pin] future: F, record: Option<Record<C>> },
        Passthrough { #[pin] future: F },
        Rejected { retry_after: Option<Duration> },
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Tracked { .. } => "tracked",
            Kind::Passthrough { .. } => "passthrough",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn tracked(future: F, record: Record<C>) -> Self {
        Self {
            kind: Kind::Tracked {
                future,
                record: Some(record),
            },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn rejected(retry_after: Duration) -> Self {
        Self {
            kind: Kind::Rejected {
                retry_after: Some(retry_after),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Tracked { future, record } => {
                let result = ready!(future.poll(cx));
                record
                    .take()
                    .expect("future polled after completion")
                    .finish(&result);
                Poll::Ready(result.map_err(Error::Inner))
            }
            KindProj::Passthrough { future } => future.poll(cx).map_err(Error::Inner),
            KindProj::Rejected { retry_after } => Poll::Ready(Err(Error::Open {
                retry_after: retry_after.take().expect("future polled after completion"),
            })),
        }
    }
}

/// The permit of a half-open probe: given back if the call is dropped before
/// it finishes.
#[derive(Debug)]
pub(crate) struct ProbePermit {
    breaker: Arc<Breaker>,
    id: Option<u64>,
}

impl ProbePermit {
    pub(crate) fn new(breaker: Arc<Breaker>, id: u64) -> Self {
        Self {
            breaker,
            id: Some(id),
        }
    }

    fn complete(mut self, outcome: Outcome, slow: bool) {
        if let Some(id) = self.id.take() {
            self.breaker.record_probe(id, outcome, slow);
        }
    }
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.breaker.release_probe(id);
        }
    }
}

/// How a call's outcome reaches its breaker.
#[derive(Debug)]
pub(crate) enum Ticket {
    Call(u32),
    Probe(ProbePermit),
}

/// What a tracked call needs to report its outcome.
pub(crate) struct Record<C> {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) classifier: C,
    pub(crate) ticket: Ticket,
    pub(crate) start: Option<Instant>,
}

impl<C> Record<C> {
    pub(crate) fn new(breaker: Arc<Breaker>, classifier: C, ticket: Ticket) -> Self {
        // The clock is read only when slow calls are detected.
        let start = breaker.clock_at_start().then(Instant::now);
        Self {
            breaker,
            classifier,
            ticket,
            start,
        }
    }

    #[inline]
    fn finish<T, E>(self, result: &Result<T, E>)
    where
        C: Classify<T, E>,
    {
        let outcome = self.classifier.classify(result);
        let now = self.breaker.clock_at_end().then(Instant::now);
        let slow = match (self.start, now, self.breaker.slow_threshold()) {
            (Some(start), Some(now), Some(threshold)) => now.duration_since(start) >= threshold,
            _ => false,
        };
        match self.ticket {
            Ticket::Call(generation) => self.breaker.record_call(generation, outcome, slow, now),
            Ticket::Probe(permit) => permit.complete(outcome, slow),
        }
    }
}
