//! The bulkhead service.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tower_service::Service;

use super::config::Config;
use super::error::Error;
use super::future::ResponseFuture;
use super::store::{Admission, MemoryStore, Refused, Store};
use crate::key::{Global, KeyExtractor};
use crate::load_shed::{PriorityExtractor, Shed, Uniform};
use crate::store::OnStoreError;

/// Holds a permit for each request while the inner service runs it;
/// refuses (or queues) a request when its key has none left.
///
/// The permit is released when the response future ends, however it ends:
/// completed, failed, or dropped at any await point. Clones share the
/// permits. With the global key, `poll_ready` is not ready while the
/// bulkhead is saturated (see [`BulkheadLayer::back_pressure`]); a per-key
/// bulkhead decides in `call`, where the key is known. A refusal is an
/// [`Error::Shed`].
///
/// [`BulkheadLayer::back_pressure`]: super::BulkheadLayer::back_pressure
///
/// See the [module docs](super) for an example.
pub struct Bulkhead<S, St = MemoryStore, K = Global, P = Uniform> {
    inner: S,
    config: Arc<Config<St, K, P>>,
    // The admission of the global key, built once (its limit follows the
    // handle): the global key's calls and readiness checks allocate no key.
    global: Option<Admission>,
}

impl<S, St, K: 'static, P> Bulkhead<S, St, K, P> {
    pub(crate) fn new(inner: S, config: Arc<Config<St, K, P>>) -> Self {
        let global = config.global();
        Self {
            inner,
            config,
            global,
        }
    }
}

impl<S, St, K, P> Bulkhead<S, St, K, P> {
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

impl<S: Clone, St, K, P> Clone for Bulkhead<S, St, K, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            global: self.global.clone(),
        }
    }
}

impl<S: fmt::Debug, St, K, P> fmt::Debug for Bulkhead<S, St, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("name", &self.config.observer.name())
            .field("max_in_flight", &self.config.limit())
            .finish_non_exhaustive()
    }
}

impl<S, St, K, P, Req> Service<Req> for Bulkhead<S, St, K, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
    St: Store,
    K: KeyExtractor<Req>,
    P: PriorityExtractor<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, St::Permit, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Ours first, as tower's ConcurrencyLimit: the inner service is not
        // made to reserve anything for a call that cannot come yet.
        let config = &*self.config;
        if config.back_pressure
            && let Some(global) = &mut self.global
        {
            global.limit = config.limit();
            ready!(config.store.poll_capacity(global, cx));
        }
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.config.priority.priority(&req);
        // The global key's admission is built once; a keyed one per call.
        // Either carries the limit now, which the handle may have changed.
        if let Some(global) = &mut self.global {
            global.limit = self.config.limit();
        }
        let admission = match &self.global {
            Some(global) if priority == global.priority => Cow::Borrowed(global),
            Some(global) => Cow::Owned(Admission {
                priority,
                ..global.clone()
            }),
            None => Cow::Owned(
                self.config
                    .admission(self.config.per.extract(&req).unwrap_or_default(), priority),
            ),
        };
        if let Some(permit) = self.config.store.try_acquire_now(&admission) {
            self.config.observer.admitted(&admission.key, priority);
            return ResponseFuture::admitted(self.inner.call(req), permit);
        }
        let mut admission = admission.into_owned();
        // The readied service goes into the future; a clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        ResponseFuture::waiting(Box::pin(async move {
            // The limit when the wait starts, not when the future was made:
            // a store brings the key to the limit it is asked with, and a
            // future first polled after a change must not undo it.
            admission.limit = config.limit();
            let key = admission.key.clone();
            let permit = match config.store.acquire(admission).await {
                Ok(permit) => {
                    config.observer.admitted(&key, priority);
                    permit
                }
                Err(Refused::Shed(reason)) => {
                    config.observer.shed(&key, priority, reason);
                    return Err(Error::Shed(Shed::new(reason, priority, config.retry_after)));
                }
                Err(Refused::Store { error, local }) => {
                    let closed = config.on_error == OnStoreError::FailClosed;
                    config.observer.failed(&key, &error, closed);
                    if closed {
                        return Err(Error::Store(error));
                    }
                    // Failed open: still within this process's own limit.
                    let response = inner.call(req).await.map_err(Error::Inner);
                    drop(local);
                    return response;
                }
            };
            let response = inner.call(req).await.map_err(Error::Inner);
            drop(permit);
            response
        }))
    }
}
