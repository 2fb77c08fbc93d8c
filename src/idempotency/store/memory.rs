use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Store;
use crate::idempotency::error::StoreError;
use crate::idempotency::fingerprint::Fingerprint;
use crate::idempotency::record::{
    Claim, Completion, Lease, MAX_LEASE, MAX_TTL, Record, StoredResponse,
};

/// The map is swept of expired records whenever it has doubled since the
/// last sweep (and holds at least this many), so memory stays bounded by the
/// keys of the last TTL without a background task, at amortised O(1) cost.
const MIN_SWEEP_LEN: usize = 1024;

/// The keys (records) a [`MemoryStore::new`] holds at most: 100,000.
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(100_000).expect("not zero");

/// The response bytes (bodies, and header and trailer names and values) a
/// [`MemoryStore`] keeps at most, unless [`MemoryStore::max_bytes`] says
/// otherwise: 256 MiB.
pub const DEFAULT_MAX_BYTES: NonZeroUsize = NonZeroUsize::new(256 * 1024 * 1024).expect("not zero");

/// An in-process store: one mutex-guarded map, each operation a single
/// critical section (no await inside). Reads time from
/// [`tokio::time::Instant`], so paused-time tests drive lease and TTL expiry.
///
/// **Bounded**: it holds at most [`DEFAULT_MAX_KEYS`] live records and
/// [`DEFAULT_MAX_BYTES`] of stored responses (see
/// [`with_max_keys`](Self::with_max_keys) and
/// [`max_bytes`](Self::max_bytes)). When either is reached, expired
/// records are swept; if that frees nothing, a claim of a new key fails with
/// [`StoreError::Full`] and the layer answers as its
/// [`OnStoreError`](crate::store::OnStoreError) says (`503` by
/// default). A live record, in flight or completed, is never evicted. A
/// completion whose response would pass the byte limit is recorded as not
/// retained (a retry gets `410`, never a second run).
///
/// Clones share the same records.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    records: Mutex<Records>,
    // One counter for all keys: numbers grow per key too, and never repeat
    // even after a record expired.
    fence: AtomicU64,
    max_keys: usize,
    // Atomic so that `max_bytes` can set it on a store already cloned.
    max_bytes: AtomicUsize,
}

struct Records {
    map: HashMap<String, Slot>,
    /// The sum of the slots' `size`.
    bytes: usize,
    next_sweep: usize,
    /// No record expires before this (a lower bound): a full store refuses
    /// new keys without sweeping until then, so a flood of them at capacity
    /// costs O(1) each, not a pass over every record.
    earliest: Instant,
}

struct Slot {
    fingerprint: Fingerprint,
    expires_at: Instant,
    state: State,
    /// The bytes of its stored response (0 while in flight).
    size: usize,
}

enum State {
    InFlight(Lease),
    /// The token of the claim that completed it, so a repeat of that
    /// completion answers as the first did.
    Completed(u64, Option<Arc<StoredResponse>>),
}

impl Slot {
    /// Whether the in-flight claim of `token` holds this slot at `now`.
    fn held_by(&self, token: u64, now: Instant) -> bool {
        self.expires_at > now && matches!(self.state, State::InFlight(l) if l.token == token)
    }
}

impl Records {
    fn sweep(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, slot| {
            let live = slot.expires_at > now;
            if !live {
                freed += slot.size;
            }
            live
        });
        self.bytes -= freed;
        self.next_sweep = self.map.len() * 2;
        self.earliest = self.map.values().map(|s| s.expires_at).min().unwrap_or(now);
    }

    fn expires(&mut self, at: Instant) {
        self.earliest = self.earliest.min(at);
    }

    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= slot.size;
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.lock();
        f.debug_struct("MemoryStore")
            .field("records", &records.map.len())
            .field("bytes", &records.bytes)
            .field("max_keys", &self.shared.max_keys)
            .field("max_bytes", &self.shared.max_bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// `deadline` from `now`, clamped to `max` so no input overflows.
fn after(now: Instant, d: Duration, max: Duration) -> Instant {
    now + d.min(max)
}

fn response_size(response: &StoredResponse) -> usize {
    let size = |headers: &http::HeaderMap| -> usize {
        headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum()
    };
    let trailers = response.trailers.as_ref().map_or(0, size);
    response
        .body
        .len()
        .saturating_add(size(&response.headers))
        .saturating_add(trailers)
}

impl MemoryStore {
    /// An empty store, bounded by [`DEFAULT_MAX_KEYS`] and
    /// [`DEFAULT_MAX_BYTES`].
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// An empty store that holds at most `max_keys` live records (and
    /// [`DEFAULT_MAX_BYTES`] of responses, see
    /// [`max_bytes`](Self::max_bytes)): when it is full (after sweeping
    /// expired ones), a claim of a new key fails with [`StoreError::Full`]
    /// and the layer answers as its
    /// [`OnStoreError`](crate::store::OnStoreError) says (`503` by default),
    /// so a flood of unique keys cannot exhaust memory.
    pub fn with_max_keys(max_keys: NonZeroUsize) -> Self {
        Self {
            shared: Arc::new(Shared {
                records: Mutex::new(Records {
                    map: HashMap::new(),
                    bytes: 0,
                    next_sweep: 0,
                    earliest: Instant::now(),
                }),
                fence: AtomicU64::new(0),
                max_keys: max_keys.get(),
                max_bytes: AtomicUsize::new(DEFAULT_MAX_BYTES.get()),
            }),
        }
    }

    /// The most bytes of stored responses (bodies, and header and trailer
    /// names and values) it keeps (default [`DEFAULT_MAX_BYTES`]); the clones of this
    /// store share the limit. See the [type docs](Self) for what happens
    /// when it is reached.
    #[must_use]
    pub fn max_bytes(self, max_bytes: NonZeroUsize) -> Self {
        self.shared
            .max_bytes
            .store(max_bytes.get(), Ordering::Relaxed);
        self
    }

    /// How many records it holds, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of the responses it holds, expired ones not yet swept
    /// included.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic cannot leave a slot half-written (each write is one
        // assignment, nothing inside the lock panics), so a poisoned lock is
        // safe to keep using.
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn full(&self, records: &Records) -> bool {
        records.map.len() >= self.shared.max_keys
            || records.bytes >= self.shared.max_bytes.load(Ordering::Relaxed)
    }

    fn claim_now(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut records = self.lock();
        // A live record answers at once: a replay or a conflict neither
        // copies the key nor sweeps.
        if let Some(slot) = records.map.get(key).filter(|s| s.expires_at > now) {
            return Ok(match &slot.state {
                // The same claim sent again (its first reply lost).
                State::InFlight(held) if held.token == token => Claim::Claimed(*held),
                State::InFlight(_) => Claim::Existing(Record::InFlight {
                    fingerprint: slot.fingerprint,
                    lease_remaining: slot.expires_at - now,
                }),
                State::Completed(_, response) => Claim::Existing(Record::Completed {
                    fingerprint: slot.fingerprint,
                    response: response.clone(),
                }),
            });
        }
        if records.map.len() >= records.next_sweep.max(MIN_SWEEP_LEN)
            || (self.full(&records) && now >= records.earliest)
        {
            records.sweep(now);
        }
        if self.full(&records) {
            return Err(StoreError::Full);
        }
        let claim = Lease {
            token,
            fence: self.shared.fence.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let expires_at = after(now, lease, MAX_LEASE);
        let slot = Slot {
            fingerprint: *fingerprint,
            expires_at,
            state: State::InFlight(claim),
            size: 0,
        };
        // The key has no live record: an expired one is replaced.
        if let Some(old) = records.map.insert(key.to_owned(), slot) {
            records.bytes -= old.size;
        }
        records.expires(expires_at);
        Ok(Claim::Claimed(claim))
    }

    /// Runs `f` on the slot of `key` if the claim of `token` still holds it.
    fn with_held<T>(
        &self,
        key: &str,
        token: u64,
        f: impl FnOnce(&mut Records, Instant) -> T,
    ) -> Option<T> {
        let now = Instant::now();
        let mut records = self.lock();
        let held = records
            .map
            .get(key)
            .is_some_and(|slot| slot.held_by(token, now));
        held.then(|| f(&mut records, now))
    }
}

impl Store for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.claim_now(key, fingerprint, token, lease)
    }

    async fn renew(&self, key: &str, token: u64, lease: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut records = self.lock();
        match records.map.get_mut(key) {
            Some(slot) if slot.held_by(token, now) => {
                slot.expires_at = after(now, lease, MAX_LEASE);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let max_bytes = self.shared.max_bytes.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut records = self.lock();
        let Records {
            map,
            bytes,
            earliest,
            ..
        } = &mut *records;
        let Some(slot) = map.get_mut(key) else {
            return Ok(false);
        };
        if !slot.held_by(lease.token, now) {
            // A repeat of a completion that landed (its caller did not hear
            // the answer) answers `true` again, as the Redis script does.
            return Ok(matches!(slot.state, State::Completed(token, _) if token == lease.token));
        }
        let (response, size) = match completion {
            Completion::Retained(response) => {
                let size = response_size(&response);
                // Over the byte budget the completion is still kept, its
                // response is not: a retry gets 410, never a second run.
                if bytes.saturating_add(size) > max_bytes {
                    (None, 0)
                } else {
                    (Some(response), size)
                }
            }
            Completion::NotRetained => (None, 0),
        };
        slot.state = State::Completed(lease.token, response);
        slot.expires_at = after(now, ttl, MAX_TTL);
        slot.size = size;
        *bytes += size;
        *earliest = (*earliest).min(slot.expires_at);
        Ok(true)
    }

    async fn release(&self, key: &str, token: u64) -> Result<bool, StoreError> {
        Ok(self
            .with_held(key, token, |records, _| records.remove(key))
            .is_some())
    }
}
