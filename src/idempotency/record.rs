//! What a store keeps per key.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::fingerprint::Fingerprint;

/// A response kept for replay: status, chosen headers and body bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers kept.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Bytes,
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
        /// Its response, or `None` when it was too large to keep.
        response: Option<StoredResponse>,
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
    /// A random token that identifies this claim; the store compares it
    /// atomically before it lets the holder complete or release.
    pub token: u64,
    /// The fencing number of this claim (see [`Fence`](super::Fence)).
    pub fence: u64,
}

impl Lease {
    /// A lease with a fresh random token.
    pub(crate) fn random(fence: u64) -> Self {
        Self {
            token: random_u64(),
            fence,
        }
    }
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
                // The OS source fails only on a broken system; a token still
                // unique within this process keeps leases apart here.
                use std::sync::atomic::{AtomicU64, Ordering};
                static FALLBACK: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
                return FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
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
    Retained(StoredResponse),
    /// The request finished but its response was too large to keep: a retry
    /// is told so and is never run again.
    NotRetained,
}
