//! The keyed circuit breaker service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::super::breaker::Admit;
use super::super::classify::{Classify, ErrorIsFailure};
use super::super::error::Error;
use super::super::future::{Record, ResponseFuture, call_ticket, probe_ticket};
use super::registry::Registry;

/// The service of [`KeyedCircuitBreakerLayer`](super::KeyedCircuitBreakerLayer).
///
/// The key is known only in `call`, so `poll_ready` waits for the inner
/// service; `call` fails fast with [`Error::Open`] when the key's breaker is
/// open.
pub struct KeyedCircuitBreaker<S, K, X, C = ErrorIsFailure> {
    inner: S,
    registry: Arc<Registry<K>>,
    extract: X,
    classifier: C,
}

impl<S, K, X, C> KeyedCircuitBreaker<S, K, X, C> {
    pub(super) fn from_parts(
        inner: S,
        registry: Arc<Registry<K>>,
        extract: X,
        classifier: C,
    ) -> Self {
        Self {
            inner,
            registry,
            extract,
            classifier,
        }
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

impl<S: Clone, K, X: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, X, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for KeyedCircuitBreaker<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, X, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, X, C>
where
    S: Service<Req>,
    K: Hash + Eq + Clone + fmt::Debug,
    X: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker((self.extract)(&req));
        let ticket = match breaker.admit() {
            Admit::Call(generation) => call_ticket(generation),
            Admit::Probe(id) => probe_ticket(id),
            Admit::Pass => {
                breaker.on_passed();
                return ResponseFuture::passthrough(self.inner.call(req));
            }
            Admit::Reject(retry_after) => {
                breaker.on_rejected(retry_after);
                return ResponseFuture::rejected(retry_after);
            }
        };
        let record = Record::new(breaker, self.classifier.clone(), ticket);
        ResponseFuture::tracked(self.inner.call(req), record)
    }
}
