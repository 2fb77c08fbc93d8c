//! What the layer is set up with and its services read: shared by both, so
//! neither imports the other for it.

use std::sync::Arc;

use super::observe::Observer;
use super::tiers::{Quotas, Snapshot};
use crate::store::OnStoreError;

/// What the layer does with a request whose key extractor finds no key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnMissingCallerKey {
    /// Reject it with [`Error::MissingCallerKey`](super::Error::MissingCallerKey)
    /// (`400 Bad Request` over HTTP).
    #[default]
    Reject,
    /// Count it under this key, shared by every keyless request.
    Fallback(Arc<str>),
}

/// How many cells a request spends. [`UnitCost`] (the default) spends one;
/// any `Fn(&Req) -> u32` closure is a cost.
pub trait Cost<Req>: Clone + Send + Sync + 'static {
    /// The cells `req` spends.
    fn cost(&self, req: &Req) -> u32;
}

/// Every request costs one cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> Cost<Req> for UnitCost {
    #[inline]
    fn cost(&self, _: &Req) -> u32 {
        1
    }
}

impl<Req, F> Cost<Req> for F
where
    F: Fn(&Req) -> u32 + Clone + Send + Sync + 'static,
{
    fn cost(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// A layer's settings; its services share them behind one `Arc`.
#[derive(Clone)]
pub(crate) struct Config<St, K, C, H, T> {
    pub(crate) store: St,
    // Shared with the layer, its clones and its handles.
    pub(crate) quotas: Arc<Quotas>,
    // The tiers when the service was built: read while they stay in force.
    pub(crate) snapshot: Snapshot,
    pub(crate) tier: T,
    pub(crate) per: K,
    pub(crate) cost: C,
    pub(crate) headers: H,
    pub(crate) missing: OnMissingCallerKey,
    pub(crate) on_error: OnStoreError,
    pub(crate) shadow: bool,
    pub(crate) observer: Arc<Observer>,
}

impl<St, K, C, H, T> Config<St, K, C, H, T> {
    /// The same settings with another key extractor, cost, headers or tier
    /// extractor.
    pub(crate) fn map<K2, C2, H2, T2>(
        self,
        per: impl FnOnce(K) -> K2,
        cost: impl FnOnce(C) -> C2,
        headers: impl FnOnce(H) -> H2,
        tier: impl FnOnce(T) -> T2,
    ) -> Config<St, K2, C2, H2, T2> {
        Config {
            store: self.store,
            quotas: self.quotas,
            snapshot: self.snapshot,
            tier: tier(self.tier),
            per: per(self.per),
            cost: cost(self.cost),
            headers: headers(self.headers),
            missing: self.missing,
            on_error: self.on_error,
            shadow: self.shadow,
            observer: self.observer,
        }
    }
}
