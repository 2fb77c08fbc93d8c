//! Where idempotency records live: [`MemoryStore`] for one instance,
//! [`RedisStore`] (feature `redis`) when several instances share keys.

use std::future::Future;
use std::time::Duration;

use super::error::StoreError;
use super::fingerprint::Fingerprint;
use super::record::{Claim, Completion, Lease};

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;

/// A store of idempotency records. Every method is atomic: two callers, in
/// one process or in several, can never both claim a free key, and a holder
/// whose lease was taken over can never complete or release the new
/// holder's claim.
pub trait Store: Clone + Send + Sync + 'static {
    /// Returns the record of `key` if it has one; otherwise claims it, in the
    /// same atomic step, with an in-flight record that expires after
    /// `lease`, a fresh random token and the next fencing number.
    fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Replaces the in-flight record with `completion`, kept for `ttl`, if
    /// and only if `lease` still holds the key. Returns `false` (and writes
    /// nothing) when it does not: the lease expired and the key is free or
    /// held by someone else.
    fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Frees `key` if and only if `lease` still holds it. Returns whether it
    /// did.
    fn release(
        &self,
        key: &str,
        lease: Lease,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
