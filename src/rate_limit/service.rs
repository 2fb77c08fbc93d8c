//! The rate limit service.

use std::any::TypeId;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::config::{Config, Cost, OnMissingCallerKey, UnitCost};
use super::decision::Decision;
use super::error::{Error, RateLimited};
use super::future::{Headers, ResponseFuture};
use super::headers::{NoHeaders, ResponseHeaders};
use super::store::Store;
use super::store::memory::MemoryStore;
use crate::key::{Global, KeyExtractor};
use crate::store::{OnStoreError, StoreError};

/// Decides each request against the store before the inner service sees it.
///
/// Clones share the layer's store, so however many clones a server makes
/// (axum makes one per request), one limit holds.
///
/// See the [module docs](super) for an example.
pub struct RateLimit<S, St = MemoryStore, K = Global, C = UnitCost, H = NoHeaders> {
    inner: S,
    config: Arc<Config<St, K, C, H>>,
}

impl<S, St, K, C, H> RateLimit<S, St, K, C, H> {
    pub(crate) fn new(inner: S, config: Arc<Config<St, K, C, H>>) -> Self {
        Self { inner, config }
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

impl<S: Clone, St, K, C, H> Clone for RateLimit<S, St, K, C, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, St, K, C, H> fmt::Debug for RateLimit<S, St, K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &c.observer.name())
            .field("limits", &c.limits)
            .field("store", &std::any::type_name::<St>())
            .finish_non_exhaustive()
    }
}

impl<St, K, C, H> Config<St, K, C, H> {
    /// What the store's answer means for the request: the decision to
    /// report on the response (none when the store failed open or in shadow
    /// mode), or the rejection.
    #[inline(always)]
    fn settle<E>(
        &self,
        key: &str,
        result: Result<Decision, StoreError>,
        start: Option<Instant>,
    ) -> Result<Option<Decision>, Error<E>> {
        let decision = match result {
            Ok(decision) => decision,
            Err(error) => {
                let closed = self.on_error == OnStoreError::FailClosed;
                self.observer.failed(key, &error, closed, start);
                return if closed {
                    Err(Error::Store(error))
                } else {
                    Ok(None)
                };
            }
        };
        self.observer
            .decided(key, &decision, &self.limits, self.shadow, start);
        if self.shadow {
            return Ok(None);
        }
        if !decision.is_allowed() {
            let limited = RateLimited::new(self.limits.clone(), decision);
            return Err(Error::Limited(limited));
        }
        Ok(Some(decision))
    }
}

impl<S, St, K, C, H, Req> Service<Req> for RateLimit<S, St, K, C, H>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
    St: Store,
    K: KeyExtractor<Req>,
    C: Cost<Req>,
    H: ResponseHeaders<S::Response>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, S::Response, S::Error, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = &*self.config;
        let key: Cow<'_, str> = match extract(&config.per, &req) {
            Some(key) => key,
            None => match &config.missing {
                OnMissingCallerKey::Fallback(key) => Cow::Borrowed(key),
                OnMissingCallerKey::Reject => {
                    config.observer.missing_key();
                    return ResponseFuture::rejected(Error::MissingCallerKey);
                }
            },
        };
        let cost = config.cost.cost(&req);
        let max = config.limits.max_cost();
        if cost > max {
            config.observer.too_costly(&key, cost, max);
            return ResponseFuture::rejected(Error::CostTooHigh { cost, max });
        }
        let start = config.observer.start();
        if let Some(result) = config.store.try_check(&key, &config.limits, cost) {
            // Decided at once: the readied inner service answers now, or is
            // left ready for the next request.
            return match config.settle(&key, result, start) {
                Err(error) => ResponseFuture::rejected(error),
                Ok(decision) => {
                    let headers = decision.filter(|_| H::APPLIES).map(|decision| Headers {
                        headers: config.headers.clone(),
                        limits: config.limits.clone(),
                        decision,
                    });
                    ResponseFuture::inner(self.inner.call(req), headers)
                }
            };
        }
        // The readied service answers this request once the store has; a
        // clone (maybe not ready) stays behind for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let key = key.into_owned();
        ResponseFuture::store(Box::pin(async move {
            let result = config.store.check(&key, &config.limits, cost).await;
            let decision = config.settle(&key, result, start)?;
            let mut response = inner.call(req).await.map_err(Error::Inner)?;
            if let Some(d) = decision {
                config.headers.apply(&mut response, &config.limits, &d);
            }
            Ok(response)
        }))
    }
}

/// The key [`Global`] gives every request.
const GLOBAL_KEY: &str = "global";

/// The key of `req`: [`Global`]'s without allocating it for every request
/// (the type test is decided at compile time), any other extractor's as it
/// gives it.
#[inline]
fn extract<'k, K: KeyExtractor<Req>, Req>(per: &K, req: &Req) -> Option<Cow<'k, str>> {
    if TypeId::of::<K>() == TypeId::of::<Global>() {
        return Some(Cow::Borrowed(GLOBAL_KEY));
    }
    per.extract(req).map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_key_is_the_one_global_gives() {
        assert_eq!(Global.extract(&()).as_deref(), Some(GLOBAL_KEY));
        assert_eq!(extract(&Global, &()).as_deref(), Some(GLOBAL_KEY));
        let per_user = |user: &&str| Some(user.to_string());
        assert_eq!(extract(&per_user, &"ann").as_deref(), Some("ann"));
    }
}
