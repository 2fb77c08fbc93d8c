//! The circuit breaker service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::breaker::{Admit, Breaker};
use super::classify::{Classify, ErrorIsFailure};
use super::error::Error;
use super::future::{ProbePermit, Record, ResponseFuture, call_ticket};
use super::handle::Handle;
use super::state::State;

/// The decision `poll_ready` took for the next call.
#[derive(Debug)]
enum Admission {
    Idle,
    Call(u32),
    Probe(ProbePermit),
    Pass,
    Reject(Duration),
}

/// Guards an inner service with a circuit breaker shared with every clone
/// and with every service built by the same layer.
///
/// `poll_ready` takes the breaker's decision for the next call: while the
/// breaker is open it is ready at once without polling the inner service,
/// and `call` fails fast with [`Error::Open`]. A half-open probe permit
/// taken by `poll_ready` is given back if the service is dropped without
/// calling.
///
/// See the [module docs](super) for an example.
pub struct CircuitBreaker<S, C = ErrorIsFailure> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    admission: Admission,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            admission: Admission::Idle,
        }
    }

    /// The handle of the breaker.
    pub fn handle(&self) -> Handle {
        Handle::new(self.breaker.clone())
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

    fn admit(&self) -> Admission {
        match self.breaker.admit() {
            Admit::Call(generation) => Admission::Call(generation),
            Admit::Probe(id) => Admission::Probe(ProbePermit::new(self.breaker.clone(), id)),
            Admit::Pass => Admission::Pass,
            Admit::Reject(retry_after) => Admission::Reject(retry_after),
        }
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // The decision (and any probe permit) belongs to this service only.
        Self::from_parts(
            self.inner.clone(),
            self.breaker.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.state())
            .field("admission", &self.admission)
            .finish()
    }
}

/// What `call` does with the request: track it, let it pass untracked (a
/// disabled breaker), or refuse it.
pub(crate) enum Start<C> {
    Tracked(Record<C>),
    Passed,
    Rejected(Duration),
}

impl<S, C: Clone> CircuitBreaker<S, C> {
    /// `poll_ready` of any request type: takes the breaker's decision for
    /// the next call, then polls the inner service unless the breaker is open.
    #[inline]
    pub(crate) fn poll_admit<Req>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error<S::Error>>>
    where
        S: Service<Req>,
    {
        let decide = match self.admission {
            Admission::Idle => true,
            // A stale decision is taken again: the breaker may have moved on
            // while this service waited.
            Admission::Reject(_) => true,
            Admission::Call(generation) => !self.breaker.is_current(generation),
            Admission::Pass => self.breaker.state() != State::Disabled,
            Admission::Probe(_) => false,
        };
        if decide {
            self.admission = self.admit();
        }
        if let Admission::Reject(_) = self.admission {
            // Open: ready at once, whatever the inner service's readiness.
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    /// Spends the decision `poll_ready` took (or takes it now, if `call`
    /// came without `poll_ready`).
    #[inline]
    pub(crate) fn start(&mut self) -> Start<C> {
        // Read in place: the closed path copies nothing but the generation.
        let ticket = match self.admission {
            Admission::Call(generation) => {
                self.admission = Admission::Idle;
                call_ticket(generation)
            }
            _ => match std::mem::replace(&mut self.admission, Admission::Idle) {
                Admission::Probe(permit) => permit.into_ticket(),
                Admission::Pass => return self.passed(),
                Admission::Reject(retry_after) => return self.rejected(retry_after),
                // Called without `poll_ready`: decide now.
                Admission::Idle | Admission::Call(_) => match self.admit() {
                    Admission::Call(generation) => call_ticket(generation),
                    Admission::Probe(permit) => permit.into_ticket(),
                    Admission::Pass => return self.passed(),
                    Admission::Reject(retry_after) => return self.rejected(retry_after),
                    Admission::Idle => unreachable!("admit never answers idle"),
                },
            },
        };
        Start::Tracked(Record::new(
            self.breaker.clone(),
            self.classifier.clone(),
            ticket,
        ))
    }

    fn passed(&self) -> Start<C> {
        self.breaker.on_passed();
        Start::Passed
    }

    fn rejected(&self, retry_after: Duration) -> Start<C> {
        self.breaker.on_rejected(retry_after);
        Start::Rejected(retry_after)
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_admit::<Req>(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.start() {
            Start::Tracked(record) => ResponseFuture::tracked(self.inner.call(req), record),
            Start::Passed => ResponseFuture::passthrough(self.inner.call(req)),
            Start::Rejected(retry_after) => ResponseFuture::rejected(retry_after),
        }
    }
}
