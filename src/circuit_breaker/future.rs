//! Response future of the circuit breaker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;

use super::breaker::Breaker;
use super::classify::Classify;
use super::error::Error;
use super::observe::CallOutcome;
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
        Tracked { #[pin] future: F, record: Record<C> },
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
            kind: Kind::Tracked { future, record },
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
                record.finish(&result);
                Poll::Ready(result.map_err(Error::Inner))
            }
            KindProj::Passthrough { future } => future.poll(cx).map_err(Error::Inner),
            KindProj::Rejected { retry_after } => Poll::Ready(Err(Error::Open {
                retry_after: retry_after.take().expect("future polled after completion"),
            })),
        }
    }
}

#[cfg(feature = "http")]
pin_project! {
    /// Response future of [`GrpcCircuitBreaker`](super::GrpcCircuitBreaker).
    pub struct GrpcResponseFuture<F> {
        #[pin]
        kind: GrpcKind<F>,
    }
}

#[cfg(feature = "http")]
pin_project! {
    #[project = GrpcKindProj]
    enum GrpcKind<F> {
        Tracked { #[pin] future: F, record: Option<Record<super::GrpcClassifier>> },
        Passthrough { #[pin] future: F },
        Rejected { retry_after: Option<Duration> },
    }
}

#[cfg(feature = "http")]
impl<F> fmt::Debug for GrpcResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            GrpcKind::Tracked { .. } => "tracked",
            GrpcKind::Passthrough { .. } => "passthrough",
            GrpcKind::Rejected { .. } => "rejected",
        };
        f.debug_struct("GrpcResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

#[cfg(feature = "http")]
impl<F> GrpcResponseFuture<F> {
    pub(crate) fn tracked(future: F, record: Record<super::GrpcClassifier>) -> Self {
        Self {
            kind: GrpcKind::Tracked {
                future,
                record: Some(record),
            },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: GrpcKind::Passthrough { future },
        }
    }

    pub(crate) fn rejected(retry_after: Duration) -> Self {
        Self {
            kind: GrpcKind::Rejected {
                retry_after: Some(retry_after),
            },
        }
    }
}

#[cfg(feature = "http")]
impl<F, B, E> Future for GrpcResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<super::GrpcBody<B>>, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        use super::GrpcBody;
        match self.project().kind.project() {
            GrpcKindProj::Tracked { future, record } => {
                let result = ready!(future.poll(cx));
                let mut record = record.take().expect("future polled after completion");
                match result {
                    Err(e) => {
                        record.finish_with(Outcome::Failure);
                        Poll::Ready(Err(Error::Inner(e)))
                    }
                    // The status is in the head (trailers-only, or not gRPC):
                    // the call is over.
                    Ok(response) => match super::GrpcClassifier::head_code(&response) {
                        Some(code) => {
                            let outcome = record.classifier().outcome(code);
                            record.finish_with(outcome);
                            Poll::Ready(Ok(response.map(GrpcBody::done)))
                        }
                        // It comes in the trailers: the body records it.
                        None => {
                            Poll::Ready(Ok(response.map(|body| GrpcBody::tracked(body, record))))
                        }
                    },
                }
            }
            GrpcKindProj::Passthrough { future } => Poll::Ready(
                ready!(future.poll(cx))
                    .map(|response| response.map(GrpcBody::done))
                    .map_err(Error::Inner),
            ),
            GrpcKindProj::Rejected { retry_after } => Poll::Ready(Err(Error::Open {
                retry_after: retry_after.take().expect("future polled after completion"),
            })),
        }
    }
}

/// The permit of a half-open probe held by a service between `poll_ready`
/// and `call`: given back if the service is dropped before calling.
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

    /// Hands the permit over to a call's [`Record`].
    pub(crate) fn into_ticket(mut self) -> u64 {
        probe_ticket(self.id.take().expect("permit taken once"))
    }
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.breaker.release_probe(id);
        }
    }
}

// A call's ticket in one word: the generation it was admitted under, or a
// probe id with the top bit set, or DONE once its outcome is recorded.
const DONE: u64 = u64::MAX;
const PROBE: u64 = 1 << 63;
const NO_START: u64 = u64::MAX;

pub(crate) fn call_ticket(generation: u32) -> u64 {
    u64::from(generation)
}

pub(crate) fn probe_ticket(id: u64) -> u64 {
    PROBE | id
}

/// What a tracked call needs to report its outcome. Kept small and read in
/// place: the hot path moves it with the future.
pub(crate) struct Record<C> {
    breaker: Arc<Breaker>,
    ticket: u64,
    // Nanoseconds since the breaker's origin, when slow calls are detected
    // or the call's tracing event is enabled.
    start: u64,
    classifier: C,
}

impl<C> Record<C> {
    #[inline]
    pub(crate) fn new(breaker: Arc<Breaker>, classifier: C, ticket: u64) -> Self {
        // The clock is read only when slow calls are detected, or for the
        // `latency_us` of a `TRACE` event (a load of the global level
        // otherwise).
        let start = if breaker.clock_at_start() || tracing::level_enabled!(tracing::Level::TRACE) {
            breaker.now_nanos()
        } else {
            NO_START
        };
        Self {
            breaker,
            ticket,
            start,
            classifier,
        }
    }

    #[inline]
    fn finish<T, E>(&mut self, result: &Result<T, E>)
    where
        C: Classify<T, E>,
    {
        let outcome = self.classifier.classify(result);
        self.finish_with(outcome);
    }

    /// The classifier the call was admitted with.
    #[cfg(feature = "http")]
    pub(crate) fn classifier(&self) -> &C {
        &self.classifier
    }

    /// Records the call's `outcome`, decided by its caller.
    #[inline]
    pub(crate) fn finish_with(&mut self, outcome: Outcome) {
        let ticket = std::mem::replace(&mut self.ticket, DONE);
        assert!(ticket != DONE, "future polled after completion");
        // One clock read at most: it times a slow call and places a call in
        // the time window.
        let now = self
            .breaker
            .clock_at_end()
            .then(|| self.breaker.now_nanos());
        let slow = match now {
            Some(now) if self.start != NO_START => {
                self.breaker.is_slow(now.saturating_sub(self.start))
            }
            _ => false,
        };
        if ticket & PROBE == 0 {
            self.breaker.record_call(ticket as u32, outcome, slow, now);
        } else {
            self.breaker.record_probe(ticket & !PROBE, outcome, slow);
        }
        let call = CallOutcome::of(outcome, slow);
        self.breaker.observer().count(call);
        // Only the global level is checked inline: the event's own code kept
        // out of line keeps the fast path small.
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.trace_finished(call, now);
        }
    }

    #[cold]
    #[inline(never)]
    fn trace_finished(&self, call: CallOutcome, now: Option<u64>) {
        tracing::trace!(
            layer = "circuit_breaker",
            name = self.breaker.observer().name(),
            key = self.breaker.key(),
            outcome = call.as_str(),
            latency_us = self.latency_us(now),
            "circuit breaker call finished"
        );
    }

    /// The call's duration in microseconds, if its start was read; reads
    /// the clock if `now` was not (only when the event is enabled).
    fn latency_us(&self, now: Option<u64>) -> Option<u64> {
        (self.start != NO_START).then(|| {
            let end = now.unwrap_or_else(|| self.breaker.now_nanos());
            end.saturating_sub(self.start) / 1_000
        })
    }
}

impl<C> Drop for Record<C> {
    fn drop(&mut self) {
        // A probe dropped before it finished gives its permit back.
        if self.ticket != DONE && self.ticket & PROBE != 0 {
            self.breaker.release_probe(self.ticket & !PROBE);
        }
    }
}
