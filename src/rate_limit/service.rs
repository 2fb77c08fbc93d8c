//! The rate limit service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::error::{Error, RateLimited};
use super::future::ResponseFuture;
use super::headers::{NoHeaders, ResponseHeaders};
use super::layer::{Cost, MissingKey, RateLimitLayer, UnitCost};
use crate::store::OnStoreError;
use super::store::Store;
use super::store::memory::MemoryStore;
use crate::key::{Global, KeyExtractor};

/// Decides each request against the store before the inner service sees it.
///
/// Clones share the layer's store, so however many clones a server makes
/// (axum makes one per request), one limit holds.
///
/// See the [module docs](super) for an example.
pub struct RateLimit<S, St = MemoryStore, K = Global, C = UnitCost, H = NoHeaders> {
    inner: S,
    config: Arc<RateLimitLayer<St, K, C, H>>,
}

impl<S, St, K, C, H> RateLimit<S, St, K, C, H> {
    pub(crate) fn new(inner: S, config: Arc<RateLimitLayer<St, K, C, H>>) -> Self {
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
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
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
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = self.config.clone();
        let key = match config.key.extract(&req) {
            Some(key) => key,
            None => match &config.missing {
                MissingKey::Fallback(key) => key.to_string(),
                MissingKey::Reject => {
                    config.observer.missing_key();
                    return Box::pin(std::future::ready(Err(Error::MissingKey)));
                }
            },
        };
        let cost = config.cost.cost(&req);
        if cost > config.limits.max_cost() {
            let max = config.limits.max_cost();
            config.observer.too_costly(&key, cost, max);
            return Box::pin(std::future::ready(Err(Error::CostTooHigh { cost, max })));
        }
        // The readied service answers this request; a clone (maybe not
        // ready) stays behind for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let start = config.observer.start();
            let decision = match config.store.check(&key, &config.limits, cost).await {
                Ok(decision) => Some(decision),
                Err(error) => {
                    let closed = config.on_error == OnStoreError::FailClosed;
                    config.observer.failed(&key, &error, closed, start);
                    if closed {
                        return Err(Error::Store(error));
                    }
                    None
                }
            };
            if let Some(d) = &decision {
                let (limits, shadow) = (&config.limits, config.shadow);
                config.observer.decided(&key, d, limits, shadow, start);
            }
            if let Some(d) = decision.filter(|d| !d.is_allowed() && !config.shadow) {
                return Err(Error::Limited(RateLimited::new(config.limits.clone(), d)));
            }
            let mut response = inner.call(req).await.map_err(Error::Inner)?;
            if let Some(d) = decision.filter(|_| !config.shadow) {
                config.headers.apply(&mut response, &config.limits, &d);
            }
            Ok(response)
        })
    }
}
