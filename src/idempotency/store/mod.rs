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

pub use self::memory::{DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;

/// The longest bound a store step may be given (`RedisStore::timeout`
/// clamps to it): a minute.
pub const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// A store of idempotency records. Every method is atomic: two callers, in
/// one process or in several, can never both claim a free key, and a holder
/// whose lease was taken over can never renew, complete or release the new
/// holder's claim.
///
/// The caller picks the claim's token before it sends the claim, so a claim
/// whose reply was lost (a timeout, a dropped future) can still be undone:
/// [`release`](Self::release) by that token frees the key if the claim
/// landed and does nothing if it did not.
///
/// Durations beyond [`MAX_LEASE`](super::MAX_LEASE) or
/// [`MAX_TTL`](super::MAX_TTL) are clamped to them; no input panics.
pub trait Store: Clone + Send + Sync + 'static {
    /// Returns the record of `key` if it has one; otherwise claims it, in the
    /// same atomic step, with an in-flight record that holds `token`, expires
    /// after `lease` and gets the next fencing number.
    ///
    /// A claim sent again with the token that already holds `key` returns
    /// that claim again (`Claimed`, same fence), so a claim may be retried.
    fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Extends the in-flight claim of `token` on `key` to expire `lease`
    /// from now, if and only if that token still holds it. Returns `false`
    /// (and writes nothing) when it does not: the lease expired, the key
    /// was released, completed, or claimed by someone else.
    fn renew(
        &self,
        key: &str,
        token: u64,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the in-flight record with `completion`, kept for `ttl`, if
    /// and only if `lease` still holds the key. Returns `false` (and writes
    /// nothing) when it does not: the lease expired and the key is free or
    /// held by someone else. A repeat of a completion that landed returns
    /// `true` and writes nothing, so a caller that did not hear the answer
    /// may send it again.
    fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Frees `key` if and only if the in-flight claim of `token` holds it.
    /// Returns whether it did. Safe to send whether or not the claim of
    /// `token` landed, and more than once.
    fn release(
        &self,
        key: &str,
        token: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
