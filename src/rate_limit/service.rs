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
use super::limits::Limits;
use super::store::Store;
use super::store::memory::MemoryStore;
use super::tiers::{DefaultTier, TierExtractor};
use crate::key::{Global, KeyExtractor};
use crate::store::{OnStoreError, StoreError};

/// Decides each request against the store before the inner service sees it.
///
/// Clones share the layer's store, so however many clones a server makes
/// (axum makes one per request), one limit holds.
///
/// See the [module docs](super) for an example.
pub struct RateLimit<S, St = MemoryStore, K = Global, C = UnitCost, H = NoHeaders, T = DefaultTier>
{
    inner: S,
    config: Arc<Config<St, K, C, H, T>>,
}

impl<S, St, K, C, H, T> RateLimit<S, St, K, C, H, T> {
    pub(crate) fn new(inner: S, config: Arc<Config<St, K, C, H, T>>) -> Self {
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

impl<S: Clone, St, K, C, H, T> Clone for RateLimit<S, St, K, C, H, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, St, K, C, H, T> fmt::Debug for RateLimit<S, St, K, C, H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &c.observer.name())
            .field("quotas", &c.quotas)
            .field("store", &std::any::type_name::<St>())
            .finish_non_exhaustive()
    }
}

impl<St, K, C, H, T> Config<St, K, C, H, T> {
    /// What the store's answer under `limits` means for the request: the
    /// decision to report on the response (none when the store failed open
    /// or in shadow mode), or the rejection.
    #[inline(always)]
    fn settle<E>(
        &self,
        key: &str,
        limits: &Limits,
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
            .decided(key, &decision, limits, self.shadow, start);
        if self.shadow {
            return Ok(None);
        }
        if !decision.is_allowed() {
            let limited = RateLimited::new(limits.clone(), decision);
            return Err(Error::Limited(limited));
        }
        Ok(Some(decision))
    }
}

impl<S, St, K, C, H, T, Req> Service<Req> for RateLimit<S, St, K, C, H, T>
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
    T: TierExtractor<Req>,
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
        // The tiers in force now, read without a lock: a replacement
        // applies from the next decision on.
        let tiers = config.quotas.current(&config.snapshot);
        let limits = tiers.select(config.tier.tier(&req));
        let cost = config.cost.cost(&req);
        let max = limits.max_cost();
        if cost > max {
            config.observer.too_costly(&key, cost, max);
            return ResponseFuture::rejected(Error::CostTooHigh { cost, max });
        }
        let start = config.observer.start();
        if let Some(result) = config.store.try_check(&key, limits, cost) {
            // Decided at once: the readied inner service answers now, or is
            // left ready for the next request.
            return match config.settle(&key, limits, result, start) {
                Err(error) => ResponseFuture::rejected(error),
                Ok(decision) => {
                    let headers = decision.filter(|_| H::APPLIES).map(|decision| Headers {
                        headers: config.headers.clone(),
                        limits: limits.clone(),
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
        let limits = limits.clone();
        drop(tiers);
        let key = key.into_owned();
        ResponseFuture::store(Box::pin(async move {
            let result = config.store.check(&key, &limits, cost).await;
            let decision = config.settle(&key, &limits, result, start)?;
            let mut response = inner.call(req).await.map_err(Error::Inner)?;
            if let Some(d) = decision {
                config.headers.apply(&mut response, &limits, &d);
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
