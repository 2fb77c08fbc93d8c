//! The adaptive throttle of the Google SRE book (chapter 21, "Handling
//! Overload"): reject locally with a probability that follows how many
//! recent calls the upstream accepted.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::attempt::ConfigError;

/// The default multiplier `k`, the SRE book's: the upstream may refuse up
/// to half of what is sent before the client rejects anything.
pub const DEFAULT_K: f64 = 2.0;

/// The default window over which requests and accepts are counted, the
/// SRE book's two minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

/// The window is kept in this many sub-windows, which expire one at a time.
const SLOTS: usize = 12;

/// The shortest window: a shorter one is this.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Client-side adaptive throttling, as in the Google SRE book: over a
/// sliding window (two minutes by default), count the calls the
/// application attempted (`requests`, including those rejected here) and
/// those the upstream accepted (`accepts`), and reject each new call
/// locally, without sending it, with probability
///
/// ```text
/// max(0, (requests - k * accepts) / (requests + 1))
/// ```
///
/// While the upstream accepts everything nothing is rejected; when it
/// refuses more than `1 - 1/k` of the calls (half, with `k = 2`), the
/// client sheds the excess itself, so an overloaded upstream spends no
/// work on refusals it would send anyway. A call is accepted unless the
/// upstream refused it for load (`429`, `503`, a gRPC `RESOURCE_EXHAUSTED`
/// or `UNAVAILABLE` in the response headers) or the call failed (a timeout,
/// a reset connection: an upstream too overloaded to answer is the case
/// this exists for). A call dropped before its answer counts for nothing. A
/// rejected call is a
/// [`throttle::Error::Rejected`](super::Error::Rejected).
///
/// Clones share the counts and the random numbers; give the layer one with
/// [`ThrottleLayer::adaptive`](super::ThrottleLayer::adaptive).
///
/// ```
/// use palisade::throttle::AdaptiveThrottle;
///
/// // k = 1.5: rejects sooner than the default 2.
/// let adaptive = AdaptiveThrottle::new(1.5).unwrap().seed(7);
/// assert_eq!(adaptive.rejection_probability(), 0.0);
/// assert!(AdaptiveThrottle::new(0.5).is_err());
/// ```
#[derive(Clone)]
pub struct AdaptiveThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    k: f64,
    window: Duration,
    counts: Mutex<Window>,
    rng: AtomicU64,
}

#[derive(Debug, Default)]
struct Window {
    /// `(requests, accepts)` per sub-window.
    slots: [(u64, u64); SLOTS],
    current: usize,
    /// The start of the current sub-window; `None` before the first call.
    start: Option<Instant>,
}

impl AdaptiveThrottle {
    /// An adaptive throttle with multiplier `k` (at least 1, finite;
    /// [`DEFAULT_K`] is the usual choice, lower values reject sooner) over
    /// a [`DEFAULT_WINDOW`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `k` is below 1 (it would reject calls the
    /// upstream accepts), infinite or not a number.
    pub fn new(k: f64) -> Result<Self, ConfigError> {
        // NaN fails the comparison.
        if !(k >= 1.0 && k.is_finite()) {
            return Err(ConfigError::OutOfRange {
                field: "k",
                reason: "at least 1 and finite",
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                k,
                window: DEFAULT_WINDOW,
                counts: Mutex::new(Window::default()),
                rng: AtomicU64::new(random_seed()),
            }),
        })
    }

    /// Counts over `window` instead (default [`DEFAULT_WINDOW`]; a window
    /// shorter than a second is a second). Starts with fresh counts.
    #[must_use]
    pub fn window(self, window: Duration) -> Self {
        self.rebuild(window.max(MIN_WINDOW), None)
    }

    /// Seeds the random numbers that decide each rejection, for tests that
    /// need repeatable runs (default: a random seed). Starts with fresh
    /// counts.
    #[must_use]
    pub fn seed(self, seed: u64) -> Self {
        let window = self.inner.window;
        self.rebuild(window, Some(seed))
    }

    fn rebuild(self, window: Duration, seed: Option<u64>) -> Self {
        let rng = seed.unwrap_or_else(|| self.inner.rng.load(Ordering::Relaxed));
        Self {
            inner: Arc::new(Inner {
                k: self.inner.k,
                window,
                counts: Mutex::new(Window::default()),
                rng: AtomicU64::new(rng),
            }),
        }
    }

    /// The multiplier `k`.
    pub fn k(&self) -> f64 {
        self.inner.k
    }

    /// The probability that the next call is rejected, from the counts of
    /// the current window.
    pub fn rejection_probability(&self) -> f64 {
        let mut counts = self.lock();
        counts.roll(Instant::now(), self.slot_len());
        counts.probability(self.inner.k)
    }

    /// `(requests, accepts)` in the current window.
    pub fn counts(&self) -> (u64, u64) {
        let mut counts = self.lock();
        counts.roll(Instant::now(), self.slot_len());
        counts.totals()
    }

    /// Decides one call: `Some(probability)` to reject it, which counts it
    /// as a request.
    pub(crate) fn reject(&self, now: Instant) -> Option<f64> {
        let mut counts = self.lock();
        counts.roll(now, self.slot_len());
        let p = counts.probability(self.inner.k);
        if p <= 0.0 || self.next_f64() >= p {
            return None;
        }
        let slot = counts.current;
        counts.slots[slot].0 += 1;
        Some(p)
    }

    /// Records the upstream's answer to a sent call.
    pub(crate) fn record(&self, now: Instant, accepted: bool) {
        let mut counts = self.lock();
        counts.roll(now, self.slot_len());
        let current = counts.current;
        let slot = &mut counts.slots[current];
        slot.0 += 1;
        slot.1 += u64::from(accepted);
    }

    fn slot_len(&self) -> Duration {
        self.inner.window / SLOTS as u32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A uniform number in `[0, 1)`: splitmix64 over a shared counter,
    /// lock-free.
    fn next_f64(&self) -> f64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .inner
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for AdaptiveThrottle {
    /// [`DEFAULT_K`] over [`DEFAULT_WINDOW`].
    fn default() -> Self {
        Self::new(DEFAULT_K).expect("the default k is valid")
    }
}

impl fmt::Debug for AdaptiveThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("k", &self.inner.k)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl Window {
    /// Moves to the sub-window of `now`, clearing those that expired.
    fn roll(&mut self, now: Instant, slot_len: Duration) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < slot_len {
            return;
        }
        let steps = elapsed.as_nanos() / slot_len.as_nanos().max(1);
        if steps >= SLOTS as u128 {
            self.slots = [(0, 0); SLOTS];
            self.current = 0;
            self.start = Some(now);
            return;
        }
        for _ in 0..steps {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = (0, 0);
        }
        // `steps` < SLOTS, so this fits.
        self.start = Some(start + slot_len * steps as u32);
    }

    fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .fold((0, 0), |(r, a), &(sr, sa)| (r + sr, a + sa))
    }

    fn probability(&self, k: f64) -> f64 {
        let (requests, accepts) = self.totals();
        let requests = requests as f64;
        ((requests - k * accepts as f64) / (requests + 1.0)).max(0.0)
    }
}

/// A seed from the standard library's per-process random hash keys: no
/// dependency for numbers that need not be secret.
fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5EED);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_probability_follows_the_formula_and_the_window_forgets() {
        let t = AdaptiveThrottle::new(2.0).unwrap().seed(1);
        let now = Instant::now();
        for i in 0..100 {
            t.record(now, i % 10 == 0); // 10 accepts in 100
        }
        let expected = (100.0 - 2.0 * 10.0) / 101.0;
        assert!((t.rejection_probability() - expected).abs() < 1e-9);
        assert_eq!(t.counts(), (100, 10));
        tokio::time::advance(DEFAULT_WINDOW).await;
        assert_eq!(t.counts(), (0, 0));
        assert_eq!(t.rejection_probability(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn sub_windows_expire_one_at_a_time() {
        let t = AdaptiveThrottle::new(2.0).unwrap();
        t.record(Instant::now(), false);
        tokio::time::advance(DEFAULT_WINDOW / 2).await;
        t.record(Instant::now(), false);
        tokio::time::advance(DEFAULT_WINDOW / 2).await;
        assert_eq!(t.counts(), (1, 0), "the first expired, the second not");
    }

    #[test]
    fn refuses_a_k_below_one_and_a_seed_repeats() {
        for bad in [0.0, 0.99, -1.0, f64::NAN, f64::INFINITY] {
            assert!(AdaptiveThrottle::new(bad).is_err(), "{bad}");
        }
        let a = AdaptiveThrottle::default().seed(42);
        let b = AdaptiveThrottle::default().seed(42);
        let xs: Vec<f64> = (0..5).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }
}
