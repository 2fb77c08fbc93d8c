use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Store;
use crate::idempotency::error::StoreError;
use crate::idempotency::fingerprint::Fingerprint;
use crate::idempotency::record::{Claim, Completion, Lease, Record, StoredResponse};

/// The map is swept of expired records whenever it has doubled since the
/// last sweep (and holds at least this many), so memory stays bounded by the
/// keys of the last TTL without a background task, at amortised O(1) cost.
const MIN_SWEEP_LEN: usize = 1024;

/// An in-process store: one mutex-guarded map, each operation a single
/// critical section (no await inside). Reads time from
/// [`tokio::time::Instant`], so paused-time tests drive lease and TTL expiry.
///
/// Clones share the same records.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<HashMap<String, Slot>>,
    // One counter for all keys: numbers grow per key too, and never repeat
    // even after a record expired.
    fence: AtomicU64,
    // Guarded by `records`' lock; atomic only to avoid a second mutex.
    next_sweep: AtomicUsize,
    max_records: Option<usize>,
}

struct Slot {
    fingerprint: Fingerprint,
    expires_at: Instant,
    state: State,
}

enum State {
    InFlight(Lease),
    Completed(Option<StoredResponse>),
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that holds at most `max_records` live records: when
    /// it is full (after sweeping expired ones), a claim of a new key fails
    /// with [`StoreError::Full`] and the layer answers as its
    /// [`OnStoreError`](crate::idempotency::OnStoreError) says (`503` by
    /// default), so a flood of unique keys cannot exhaust memory.
    pub fn bounded(max_records: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_records: Some(max_records),
                ..Shared::default()
            }),
        }
    }

    /// How many records it holds, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic cannot leave a slot half-written (each write is one
        // assignment), so a poisoned lock is safe to keep using.
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn claim_now(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut records = self.lock();
        let full = |len: usize| self.shared.max_records.is_some_and(|max| len >= max);
        let next_sweep = self
            .shared
            .next_sweep
            .load(Ordering::Relaxed)
            .max(MIN_SWEEP_LEN);
        if records.len() >= next_sweep || (full(records.len()) && !records.contains_key(key)) {
            records.retain(|_, slot| slot.expires_at > now);
            self.shared
                .next_sweep
                .store(records.len() * 2, Ordering::Relaxed);
            if full(records.len()) && !records.contains_key(key) {
                return Err(StoreError::Full);
            }
        }
        let fresh = |shared: &Shared| {
            let claim = Lease::random(shared.fence.fetch_add(1, Ordering::Relaxed) + 1);
            let slot = Slot {
                fingerprint: *fingerprint,
                expires_at: now + lease,
                state: State::InFlight(claim),
            };
            (claim, slot)
        };
        match records.entry(key.to_owned()) {
            Entry::Occupied(mut entry) => {
                let slot = entry.get();
                if slot.expires_at > now {
                    return Ok(Claim::Existing(match &slot.state {
                        State::InFlight(_) => Record::InFlight {
                            fingerprint: slot.fingerprint,
                            lease_remaining: slot.expires_at - now,
                        },
                        State::Completed(response) => Record::Completed {
                            fingerprint: slot.fingerprint,
                            response: response.clone(),
                        },
                    }));
                }
                let (claim, slot) = fresh(&self.shared);
                entry.insert(slot);
                Ok(Claim::Claimed(claim))
            }
            Entry::Vacant(entry) => {
                let (claim, slot) = fresh(&self.shared);
                entry.insert(slot);
                Ok(Claim::Claimed(claim))
            }
        }
    }

    /// Runs `f` on the slot of `key` if `lease` still holds it.
    fn with_held<T>(
        &self,
        key: &str,
        lease: Lease,
        f: impl FnOnce(&mut HashMap<String, Slot>) -> T,
    ) -> Option<T> {
        let now = Instant::now();
        let mut records = self.lock();
        let held = records.get(key).is_some_and(|slot| {
            slot.expires_at > now
                && matches!(slot.state, State::InFlight(l) if l.token == lease.token)
        });
        held.then(|| f(&mut records))
    }
}

impl Store for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.claim_now(key, fingerprint, lease)
    }

    async fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let response = match completion {
            Completion::Retained(response) => Some(response),
            Completion::NotRetained => None,
        };
        Ok(self
            .with_held(key, lease, |records| {
                let slot = records.get_mut(key).expect("checked under the same lock");
                slot.state = State::Completed(response);
                slot.expires_at = Instant::now() + ttl;
            })
            .is_some())
    }

    async fn release(&self, key: &str, lease: Lease) -> Result<bool, StoreError> {
        Ok(self
            .with_held(key, lease, |records| {
                records.remove(key);
            })
            .is_some())
    }
}
