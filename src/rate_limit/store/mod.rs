//! The store seam: where the GCRA state of each key lives.
//!
//! A [`Store`] decides one request against a set of [`Limits`] atomically:
//! every quota must allow it, and a denial consumes nothing.
//! [`MemoryStore`](super::MemoryStore) keeps the state in this process;
//! `RedisStore` (feature `redis`) keeps it in Redis so every instance of a
//! service sees one count.

use std::future::Future;

pub(crate) use super::decision::Decision;
pub(crate) use super::gcra::{Gcra, decide, decide_one};
pub(crate) use super::limits::Limits;

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Where the rate limiter state lives. Implementations decide atomically.
///
/// Clones share one state: the layer clones the store into every service it
/// builds, and all of them count against the same buckets.
pub trait Store: Clone + Send + Sync + 'static {
    /// Spends `cost` cells of `key` under every quota of `limits` if all of
    /// them have that many left, and otherwise spends nothing.
    fn check(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Decides at once, when the store can without waiting (the state is
    /// in this process): what [`check`](Self::check) would answer, or
    /// `None` to have the layer await `check`. The layer asks this first,
    /// so a store that answers here spares every request a boxed future.
    /// The default answers `None`.
    #[inline]
    fn try_check(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> Option<Result<Decision, StoreError>> {
        let _ = (key, limits, cost);
        None
    }
}

pub(crate) use crate::store::StoreError;
