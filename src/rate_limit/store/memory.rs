//! The in-process store: sharded maps of GCRA state, bounded in size.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::time::Instant;

use super::{Decision, Gcra, Limits, Store, StoreError, decide, decide_one};

const SHARDS: usize = 64;

/// The keys a [`MemoryStore::new`] holds at most: 100,000 (rounded up to a
/// multiple of the shard count).
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();
// Below this many entries a shard is not worth sweeping.
const MIN_SWEEP: usize = 64;
// A flood of new keys into a full store logs one warning this often.
const WARN_EVERY: u64 = 60_000_000_000;

/// The embedded store: the state of each key in this process's memory.
///
/// Keys are spread over 64 shards, each behind a short lock. Memory stays
/// bounded by [`max_keys`](Self::max_keys) ([`DEFAULT_MAX_KEYS`] unless
/// built [`with_max_keys`](Self::with_max_keys)), and no bucket that still limits
/// its key is ever dropped: a key whose buckets are full again is idle, and
/// dropping it changes no decision (a fresh key decides the same), so idle
/// keys are swept whenever a shard grows, and those are the only keys ever
/// dropped. When a new key finds its shard full of live keys, it is not given
/// a fresh bucket (that would let a client who floods unique keys reset
/// anyone's, an exhausted one included): it is decided on an overflow bucket
/// with the same quotas, one per set of [`Limits`], shared by every key that
/// found no room, until idle keys make room again. While a flood lasts, new
/// clients share that one bucket's quota; keys already held keep theirs. A
/// warning is logged when keys start to overflow (then at most once a minute,
/// with the number of such decisions since), and the layer counts each
/// such decision (`palisade_rate_limit_overflow_decisions_total`, see
/// [`Decision::is_overflowed`]). Size `max_keys` for the keys live at once:
/// those seen within one refill period of the slowest quota. A key that was
/// decided on the overflow bucket and later finds room starts with a fresh
/// bucket of its own. No background task runs: dropping the last clone frees
/// everything.
///
/// Time is read from `tokio::time::Instant`, so paused-time tests drive it.
/// With feature `fast-clock`, a store reads the CPU's time-stamp counter
/// instead (through `quanta`, as governor does: a few nanoseconds instead of
/// some 25) wherever tokio is built without its `test-util` feature, that
/// is wherever tokio's time can never be paused: in a release build, not in
/// the tests of a crate that pauses time. The first such store in a process
/// calibrates the counter against the OS clock (here well under a
/// millisecond; `quanta` gives up after 200 ms).
/// [`fast_clock`](Self::fast_clock) picks one clock regardless.
///
/// The first key decided under a single quota (for a layer with the default
/// global key, its only key) is kept apart from the shards, never evicted:
/// its state is one atomic theoretical arrival time updated by
/// compare-and-swap, so deciding it takes no hash, no map and no lock.
/// Several quotas on one key stay on the locked path, where a denial by one
/// spends nothing from the others.
///
/// Clones share one state. See the [module docs](super::super) for an example.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    // In the handle, not the shared state: read on every decision, and set
    // by `fast_clock` before the store is shared.
    clock: Clock,
}

struct Inner {
    direct: Direct,
    shards: Box<[Padded]>,
    hasher: RandomState,
    start: Instant,
    max_per_shard: usize,
    // The buckets of keys that found their shard full of live keys, one per
    // set of limits. Locked only on that path, never while a shard is.
    overflow: Mutex<Overflow>,
}

#[derive(Default)]
struct Overflow {
    // Keyed by the limits' bucket id, as the shards are, so a quota
    // replaced at run time keeps it; one entry per limiter whose keys
    // overflowed, so a short list searched in order.
    buckets: Vec<(u64, Tats)>,
    // Decisions since the last warning, and when the next one may be logged.
    unwarned: u64,
    warn_at: u64,
}

// The lock-free slot: one key under one single-quota limit, claimed once.
// A key is claimed only under its shard's lock while the shard does not
// hold it, and every miss re-checks the claim under that lock before
// inserting, so a key's state lives either in the shards or here, never in
// both.
struct Direct {
    claim: OnceLock<Claim>,
    // Nanoseconds since `start`; 0 is a fresh key's state.
    tat: AtomicU64,
}

struct Claim {
    // The claimed limits' bucket id: limits that replaced them at run time
    // keep deciding here, under their own quota.
    bucket_id: u64,
    key: Box<str>,
}

impl Direct {
    #[inline]
    fn holds(&self, key: &str, limits: &Limits) -> Option<Gcra> {
        let c = self.claim.get()?;
        // An equal bucket id means as many quotas: one.
        if c.bucket_id == limits.bucket_id() && *c.key == *key {
            limits.single()
        } else {
            None
        }
    }

    #[inline]
    fn decide(&self, now: u64, cost: u32, g: Gcra) -> Decision {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let (decision, next) = decide_one(current, now, cost, g);
            // A denial writes nothing.
            let Some(next) = next else { return decision };
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(seen) => current = seen,
            }
        }
    }
}

// Where "now" comes from. tokio's clock follows paused time; the fast one
// reads the CPU's time-stamp counter through `quanta` (as governor does).
#[derive(Clone)]
enum Clock {
    Tokio,
    #[cfg(feature = "fast-clock")]
    Fast {
        clock: quanta::Clock,
        start: u64,
    },
}

impl Clock {
    #[cfg(feature = "fast-clock")]
    fn fast() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Self::Fast { clock, start }
    }
}

// One cache line per shard, so two cores on two shards do not contend.
#[repr(align(64))]
struct Padded(Mutex<Shard>);

#[derive(Default)]
struct Shard {
    // Keyed by the full 64-bit hash; the rare entries whose hashes collide
    // are chained, so no lookup needs a second hash or an allocation.
    map: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    len: usize,
    sweep_at: usize,
    // No entry is idle before this time: a full shard is not swept again
    // until then, so a flood of new keys costs no sweep each. Theoretical
    // arrival times only grow, so a time taken at a sweep or an insert stays
    // a lower bound.
    next_idle: u64,
}

struct Entry {
    key: Box<str>,
    bucket_id: u64,
    tats: Tats,
    next: Option<Box<Entry>>,
}

enum Tats {
    One([u64; 1]),
    Many(Box<[u64]>),
}

impl Tats {
    fn new(n: usize) -> Self {
        if n == 1 {
            Self::One([0])
        } else {
            Self::Many(vec![0; n].into_boxed_slice())
        }
    }

    fn as_mut(&mut self) -> &mut [u64] {
        match self {
            Self::One(t) => t,
            Self::Many(t) => t,
        }
    }

    fn idle(&self, now: u64) -> bool {
        self.idle_at() <= now
    }

    // When every bucket is full again.
    fn idle_at(&self) -> u64 {
        match self {
            Self::One([t]) => *t,
            Self::Many(t) => t.iter().copied().max().unwrap_or(0),
        }
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 hashes are keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl MemoryStore {
    /// An empty store that holds at most [`DEFAULT_MAX_KEYS`] keys (then
    /// new keys share an overflow bucket, see the [type docs](Self)), on
    /// the clock the type docs describe.
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// An empty store that holds at most about `max_keys` keys (rounded up
    /// to a multiple of the shard count), on the clock the
    /// [type docs](Self) describe.
    pub fn with_max_keys(max_keys: NonZeroUsize) -> Self {
        #[cfg(feature = "fast-clock")]
        if !crate::clock::tokio_time_can_pause() {
            return Self::build(max_keys, Clock::fast());
        }
        Self::build(max_keys, Clock::Tokio)
    }

    /// Sets the clock [`check_now`](Self::check_now) (and so the layer)
    /// reads: `true` for the CPU's time-stamp counter (through `quanta`,
    /// calibrated against the OS clock; where the CPU has no invariant
    /// counter, `quanta` reads the OS clock), `false` for
    /// `tokio::time::Instant`, whatever the default would be (see the
    /// [type docs](Self)).
    ///
    /// The fast clock does not follow tokio's paused time, so tests that
    /// advance time by hand need `false` (or the default).
    /// [`check_at`](Self::check_at) takes a `tokio::time::Instant` either
    /// way, counted from the store's creation. Both clocks count from the
    /// store's creation, so set the clock before the store is cloned or
    /// decides: clones taken before keep the clock they had.
    #[cfg(feature = "fast-clock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fast-clock")))]
    #[must_use]
    pub fn fast_clock(mut self, fast: bool) -> Self {
        self.clock = if fast { Clock::fast() } else { Clock::Tokio };
        self
    }

    fn build(max_keys: NonZeroUsize, clock: Clock) -> Self {
        let max_per_shard = max_keys.get().div_ceil(SHARDS);
        Self {
            clock,
            inner: Arc::new(Inner {
                direct: Direct {
                    claim: OnceLock::new(),
                    tat: AtomicU64::new(0),
                },
                shards: (0..SHARDS)
                    .map(|_| Padded(Mutex::new(Shard::default())))
                    .collect(),
                hasher: RandomState::new(),
                start: Instant::now(),
                max_per_shard,
                overflow: Mutex::new(Overflow::default()),
            }),
        }
    }

    /// The largest number of keys this store holds.
    pub fn max_keys(&self) -> usize {
        self.inner.max_per_shard * SHARDS
    }

    /// The number of keys held in the shards now, idle ones not yet swept
    /// included (the one key in the lock-free slot is not counted).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(&s.0).len).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides now, without a future: what [`Store::check`] does.
    #[inline]
    pub fn check_now(&self, key: &str, limits: &Limits, cost: u32) -> Decision {
        let inner = &*self.inner;
        let now = match &self.clock {
            Clock::Tokio => nanos_since(inner.start, Instant::now()),
            #[cfg(feature = "fast-clock")]
            Clock::Fast { clock, start } => clock.delta_as_nanos(*start, clock.raw()),
        };
        inner.decide(key, limits, cost, now)
    }

    /// Decides as of `now` (clamped to the store's creation): for replaying
    /// a trace of requests against a clock of the caller's choosing. A `now`
    /// earlier than one already seen only makes the decision stricter.
    pub fn check_at(&self, key: &str, limits: &Limits, cost: u32, now: Instant) -> Decision {
        let inner = &*self.inner;
        inner.decide(key, limits, cost, nanos_since(inner.start, now))
    }
}

impl Inner {
    // The slot's check stays inline in `check_now`; the shards' path does not.
    #[inline]
    fn decide(&self, key: &str, limits: &Limits, cost: u32, now: u64) -> Decision {
        match self.direct.holds(key, limits) {
            Some(g) => self.direct.decide(now, cost, g),
            None => self.decide_in_shards(key, limits, cost, now),
        }
    }

    #[inline(never)]
    fn decide_in_shards(&self, key: &str, limits: &Limits, cost: u32, now: u64) -> Decision {
        // Buckets are found by their id, and decided under the limits in
        // force: a quota replaced at run time applies to the state kept.
        let bucket_id = limits.bucket_id();
        let hash = self.hash(key, bucket_id);
        // Bits the map itself does not use (it takes the low bits for the
        // bucket and the top 7 for its tags), so shards stay evenly spread.
        let shard = &self.shards[(hash >> 40) as usize % SHARDS].0;
        let mut shard = lock(shard);
        if let Some(entry) = shard.map.get_mut(&hash) {
            let mut entry = entry;
            loop {
                if entry.bucket_id == bucket_id && &*entry.key == key {
                    return decide(entry.tats.as_mut(), now, cost, limits.gcra());
                }
                match entry.next {
                    Some(ref mut next) => entry = next,
                    None => break,
                }
            }
        }
        if let Some(g) = limits.single() {
            // Re-checked under the lock: another thread may have claimed
            // this very key since the lock-free look.
            if self.direct.holds(key, limits).is_some() {
                drop(shard);
                return self.direct.decide(now, cost, g);
            }
            // The map does not hold this key, and this shard's lock keeps it
            // so until the claim is made.
            if self.direct.claim.get().is_none()
                && self
                    .direct
                    .claim
                    .set(Claim {
                        bucket_id,
                        key: key.into(),
                    })
                    .is_ok()
            {
                drop(shard);
                return self.direct.decide(now, cost, g);
            }
        }
        if !shard.make_room(now, self.max_per_shard) {
            drop(shard);
            return self.decide_in_overflow(limits, cost, now);
        }
        let mut tats = Tats::new(limits.gcra().len());
        let decision = decide(tats.as_mut(), now, cost, limits.gcra());
        if decision.is_allowed() {
            // A denied fresh key has nothing to remember.
            shard.insert(hash, key, bucket_id, tats);
        }
        decision
    }

    // A new key whose shard holds only live buckets: forgetting one of them
    // would hand its key a fresh burst, so the new key is decided on the
    // overflow bucket its limits share with every other such key.
    #[cold]
    fn decide_in_overflow(&self, limits: &Limits, cost: u32, now: u64) -> Decision {
        let (bucket_id, gcra) = (limits.bucket_id(), limits.gcra());
        let mut overflow = lock(&self.overflow);
        let buckets = &mut overflow.buckets;
        let i = match buckets.iter().position(|(id, _)| *id == bucket_id) {
            Some(i) => i,
            None => {
                // Idle buckets are as good as new: only limiters overflowing
                // now keep one, so the list stays as short as their number.
                buckets.retain(|(_, tats)| !tats.idle(now));
                buckets.push((bucket_id, Tats::new(gcra.len())));
                buckets.len() - 1
            }
        };
        let decision = decide(buckets[i].1.as_mut(), now, cost, gcra).overflowed();
        overflow.unwarned += 1;
        if now < overflow.warn_at {
            return decision;
        }
        let decisions = std::mem::take(&mut overflow.unwarned);
        overflow.warn_at = now.saturating_add(WARN_EVERY);
        drop(overflow);
        tracing::warn!(
            max_keys = self.max_per_shard * SHARDS,
            decisions,
            "rate limit memory store full of live keys: new keys share an overflow bucket"
        );
        decision
    }

    // The key alone goes through the keyed hash (one field: no terminator
    // needed); the limits' bucket id is mixed in after, so a key counted
    // under two limits lands in two places without hashing more bytes.
    #[inline]
    fn hash(&self, key: &str, bucket_id: u64) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key.as_bytes());
        hasher.finish() ^ bucket_id
    }
}

impl Shard {
    // Whether one more key fits, once idle keys are swept. Sweeps come as
    // the shard doubles (so their cost is spread over the inserts) and, in a
    // full shard, only once some entry may have become idle.
    fn make_room(&mut self, now: u64, max: usize) -> bool {
        let due = self.len >= self.sweep_at.max(MIN_SWEEP).min(max);
        if due && (self.len < max || now >= self.next_idle) {
            self.sweep(now);
            self.sweep_at = self.len.saturating_mul(2);
        }
        self.len < max
    }

    fn insert(&mut self, hash: u64, key: &str, bucket_id: u64, tats: Tats) {
        self.next_idle = self.next_idle.min(tats.idle_at());
        let entry = Entry {
            key: key.into(),
            bucket_id,
            tats,
            next: None,
        };
        self.len += 1;
        match self.map.get_mut(&hash) {
            Some(head) => {
                let mut entry = Box::new(entry);
                entry.next = head.next.take();
                head.next = Some(entry);
            }
            None => {
                self.map.insert(hash, entry);
            }
        }
    }

    // Drops idle entries: their buckets are full, as a fresh key's are, so
    // forgetting them changes no decision. Live entries always stay.
    fn sweep(&mut self, now: u64) {
        let mut removed = 0;
        let mut next_idle = u64::MAX;
        self.map.retain(|_, head| {
            let mut chain = head.next.take();
            while let Some(mut e) = chain {
                chain = e.next.take();
                if e.tats.idle(now) {
                    removed += 1;
                } else {
                    next_idle = next_idle.min(e.tats.idle_at());
                    e.next = head.next.take();
                    head.next = Some(e);
                }
            }
            if head.tats.idle(now) {
                removed += 1;
                match head.next.take() {
                    Some(next) => {
                        *head = *next;
                        true
                    }
                    None => false,
                }
            } else {
                next_idle = next_idle.min(head.tats.idle_at());
                true
            }
        });
        self.len -= removed;
        self.next_idle = next_idle;
    }
}

fn nanos_since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The critical sections do not panic; a poisoned lock still holds
    // consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clock = match self.clock {
            Clock::Tokio => "tokio",
            #[cfg(feature = "fast-clock")]
            Clock::Fast { .. } => "fast",
        };
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.max_keys())
            .field("clock", &clock)
            .finish_non_exhaustive()
    }
}

impl Store for MemoryStore {
    fn check(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        std::future::ready(Ok(self.check_now(key, limits, cost)))
    }

    #[inline]
    fn try_check(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.check_now(key, limits, cost)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::Quota;

    fn nz(n: u32) -> std::num::NonZeroU32 {
        std::num::NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn colliding_entries_are_chained_and_swept() {
        let mut shard = Shard::default();
        let limits = Limits::new([Quota::per_second(nz(1))]);
        let mut tats = Tats::new(1);
        decide(tats.as_mut(), 10, 1, limits.gcra());
        shard.insert(7, "a", 1, tats);
        let mut tats = Tats::new(1);
        decide(tats.as_mut(), 10, 1, limits.gcra());
        shard.insert(7, "b", 1, tats);
        assert_eq!((shard.len, shard.map.len()), (2, 1));
        assert_eq!(&*shard.map[&7].next.as_ref().unwrap().key, "b");
        shard.sweep(10);
        assert_eq!(shard.len, 2, "live entries stay");
        shard.sweep(10 + 1_000_000_000);
        assert_eq!((shard.len, shard.map.len()), (0, 0), "idle entries go");
    }

    #[test]
    fn a_full_shard_makes_room_only_by_dropping_idle_entries() {
        let full_at = |t| Tats::One([t]);
        let mut shard = Shard::default();
        assert!(shard.make_room(0, 2));
        shard.insert(1, "a", 1, full_at(100));
        assert!(shard.make_room(0, 2));
        shard.insert(2, "b", 1, full_at(50));
        assert!(!shard.make_room(10, 2), "both live: no room");
        assert_eq!(shard.len, 2, "and no live entry dropped");
        assert!(shard.make_room(50, 2), "b is full again at 50");
        assert_eq!(shard.len, 1);
        // Full again with a key idle sooner than any the sweep saw.
        shard.insert(3, "c", 1, full_at(60));
        assert!(!shard.make_room(59, 2));
        assert!(shard.make_room(60, 2), "c is full again at 60");
        assert_eq!(&*shard.map[&1].key, "a");
    }

    #[test]
    fn a_time_older_than_the_state_denies_without_underflow() {
        let store = MemoryStore::new();
        let one = Limits::new([Quota::per_hour(nz(2))]);
        let two = one.with(Quota::per_minute(nz(5)));
        let start = Instant::now();
        let later = start + std::time::Duration::from_secs(600);
        // The first key takes the lock-free slot, the others the shards.
        for (key, limits) in [("slot", &one), ("shard", &one), ("two", &two)] {
            assert!(store.check_at(key, limits, 2, later).is_allowed(), "{key}");
            // The state runs an hour past `start`: nothing is left then.
            let d = store.check_at(key, limits, 1, start);
            assert!(!d.is_allowed(), "{key}");
            assert_eq!((d.quota(), d.remaining()), (0, 0), "{key}");
        }
    }

    // The tests build tokio with `test-util`: time can be paused, so the
    // default store must follow it even when the fast clock is compiled in.
    #[tokio::test(start_paused = true)]
    async fn the_default_store_follows_paused_time() {
        let store = MemoryStore::new();
        assert!(format!("{store:?}").contains(r#"clock: "tokio""#));
        let limits = Limits::new([Quota::per_hour(nz(1))]);
        for key in ["slot", "shard"] {
            assert!(store.check_now(key, &limits, 1).is_allowed());
            assert!(!store.check_now(key, &limits, 1).is_allowed());
        }
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        for key in ["slot", "shard"] {
            assert!(store.check_now(key, &limits, 1).is_allowed(), "{key}");
        }
    }
}
