//! What a store keeps per key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::fingerprint::Fingerprint;

/// The longest a completed record is kept ([`IdempotencyLayer::ttl`] and the
/// stores clamp to it): 365 days.
///
/// [`IdempotencyLayer::ttl`]: super::IdempotencyLayer::ttl
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest lease the layer uses ([`IdempotencyLayer::lease`] clamps to
/// it): 100 ms, so the heartbeat that renews it (every third of it) stays
/// far from a busy loop.
///
/// [`IdempotencyLayer::lease`]: super::IdempotencyLayer::lease
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// The longest lease ([`IdempotencyLayer::lease`] and the stores clamp to
/// it): one day. With renewal a lease only has to outlive a stalled holder,
/// not the request.
///
/// [`IdempotencyLayer::lease`]: super::IdempotencyLayer::lease
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// A response kept for replay: status, chosen headers, body bytes and the
/// trailers that ended the body, if any (a gRPC response's `grpc-status`
/// travels there).
///
/// Non-exhaustive: build one with [`new`](Self::new) and
/// [`with_trailers`](Self::with_trailers).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers kept.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Bytes,
    /// The trailers the body ended with, all of them, sent again after the
    /// body on a replay; `None` when the body had no trailers frame.
    pub trailers: Option<HeaderMap>,
}

impl StoredResponse {
    /// A response without trailers.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            status,
            headers,
            body,
            trailers: None,
        }
    }

    /// Sets the trailers the body ends with.
    #[must_use]
    pub fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }
}

/// The record a claim found already present for its key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Record {
    /// Another request holds the key and has not finished.
    InFlight {
        /// The fingerprint of the request holding it.
        fingerprint: Fingerprint,
        /// Time left on its lease.
        lease_remaining: Duration,
    },
    /// A request with this key finished.
    Completed {
        /// The fingerprint of the request that ran.
        fingerprint: Fingerprint,
        /// Its response, or `None` when it was not kept (too large, or its
        /// body failed or was cut off while being read). Shared with the
        /// store, so a replay costs no copy while the store is locked.
        response: Option<Arc<StoredResponse>>,
    },
}

impl Record {
    /// The fingerprint of the request behind the record.
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::InFlight { fingerprint, .. } | Self::Completed { fingerprint, .. } => fingerprint,
        }
    }
}

/// A claim held on a key: the proof a completion or release must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// A random token that identifies this claim, chosen by the caller
    /// before it sent the claim; the store compares it atomically before it
    /// lets the holder renew, complete or release.
    pub token: u64,
    /// The fencing number of this claim (see [`Fence`](super::Fence)).
    pub fence: u64,
}

/// A random `u64` from the operating system's CSPRNG, fetched 32 at a time
/// per thread so a claim does not pay a system call each.
pub(crate) fn random_u64() -> u64 {
    use std::cell::RefCell;
    const BATCH: usize = 32;
    thread_local! {
        static POOL: RefCell<(usize, [u64; BATCH])> = const { RefCell::new((BATCH, [0; BATCH])) };
    }
    POOL.with(|pool| {
        let (next, values) = &mut *pool.borrow_mut();
        if *next == BATCH {
            let mut bytes = [0u8; BATCH * 8];
            if getrandom::fill(&mut bytes).is_err() {
                // The OS source fails only on a broken system. Tokens must
                // still differ across processes (a claim re-sent with its
                // own token takes its lease back), so a counter is mixed
                // with the process id and the time by std's seeded hasher.
                use std::hash::{BuildHasher, Hash, Hasher};
                use std::sync::atomic::{AtomicU64, Ordering};
                static FALLBACK: AtomicU64 = AtomicU64::new(0);
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                FALLBACK.fetch_add(1, Ordering::Relaxed).hash(&mut h);
                std::process::id().hash(&mut h);
                std::time::SystemTime::now().hash(&mut h);
                return h.finish();
            }
            for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(8)) {
                *value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            }
            *next = 0;
        }
        *next += 1;
        values[*next - 1]
    })
}

/// The outcome of [`Store::claim`](super::Store::claim).
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key was free: this request holds it now.
    Claimed(Lease),
    /// The key already has a record.
    Existing(Record),
}

/// What a holder writes when it finishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The response, kept for replay.
    /// Shared, so that a completion sent again after a store failure, and
    /// the record a memory store keeps, cost no copy.
    Retained(Arc<StoredResponse>),
    /// The request finished but its response is not kept (too large, or its
    /// body failed or was cut off while the layer read it): a retry is told
    /// so (`410`) and is never run again.
    NotRetained,
}
