//! How long to wait before the next attempt: exponential, with jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::attempt::ConfigError;

/// How the exponential backoff is spread out, after AWS's "Exponential
/// Backoff and Jitter": jitter keeps the clients that failed together from
/// retrying together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// A wait drawn uniformly from zero to `min(max, base * 2^n)` before
    /// retry `n + 1`: the fewest calls of the three, the default.
    #[default]
    Full,
    /// A wait drawn uniformly from `base` to three times the previous wait
    /// (the first previous wait is `base`), at most `max`: never shorter than
    /// `base`.
    Decorrelated,
    /// No jitter: exactly `min(max, base * 2^n)`. For tests and for a
    /// single client.
    None,
}

/// The waits between attempts: exponential from `base` to `max`, with
/// [`Jitter`].
///
/// A server's requested wait (`Retry-After`, `grpc-retry-pushback-ms`)
/// replaces the backoff's wait for that retry.
///
/// ```
/// use std::time::Duration;
/// use palisade::retry::{Backoff, Jitter};
///
/// let ms = Duration::from_millis;
/// let backoff = Backoff::exponential(ms(100), ms(1000)).unwrap().jitter(Jitter::None);
/// let waits: Vec<_> = backoff.delays().take(5).collect();
/// assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1000)]);
///
/// let seeded = Backoff::default().seed(7);
/// assert!(seeded.delays().take(10).eq(seeded.delays().take(10)), "a seed repeats");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Backoff {
    /// The default first wait: 50 ms.
    pub const DEFAULT_BASE: Duration = Duration::from_millis(50);
    /// The default longest wait: 2 s.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(2);

    /// Waits growing from `base`, doubling each retry, up to `max`, with
    /// [`Jitter::Full`]. Doubling saturates at `max`, whatever the number of
    /// retries and however large the durations.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] unless `0 < base <= max`.
    pub fn exponential(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::OutOfRange {
                field: "base",
                reason: "more than zero",
            });
        }
        if base > max {
            return Err(ConfigError::OutOfRange {
                field: "max",
                reason: "at least base",
            });
        }
        Ok(Self {
            base,
            max,
            jitter: Jitter::Full,
            seed: None,
        })
    }

    /// The jitter (default [`Jitter::Full`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Draws the jitter from a generator seeded with `seed`, so a test sees
    /// the same waits on every run (by default each request draws from a
    /// random seed). The requests of one layer still get different waits:
    /// each draws from the seed and its own number.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The first wait.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The waits of one request, before its second attempt, its third and
    /// so on (an endless iterator). With a [`seed`](Self::seed), the same
    /// sequence on every call; without, a random one.
    pub fn delays(&self) -> Delays {
        self.delays_for(0)
    }

    /// The waits of the `n`th request through a layer.
    pub(crate) fn delays_for(&self, n: u64) -> Delays {
        let seed = match self.seed {
            Some(seed) => seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(n);
                hasher.finish()
            }
        };
        Delays {
            backoff: *self,
            rng: SplitMix64(seed),
            retry: 0,
            previous: self.base,
        }
    }
}

impl Default for Backoff {
    /// [`DEFAULT_BASE`](Self::DEFAULT_BASE) to
    /// [`DEFAULT_MAX`](Self::DEFAULT_MAX), [`Jitter::Full`].
    fn default() -> Self {
        Self::exponential(Self::DEFAULT_BASE, Self::DEFAULT_MAX).expect("the defaults are in range")
    }
}

/// The waits of one request: see [`Backoff::delays`].
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    rng: SplitMix64,
    /// Retries drawn so far.
    retry: u32,
    /// The previous wait, for [`Jitter::Decorrelated`].
    previous: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let Backoff {
            base, max, jitter, ..
        } = self.backoff;
        let wait = match jitter {
            Jitter::None => ceiling(base, max, self.retry),
            Jitter::Full => uniform(&mut self.rng, ceiling(base, max, self.retry)),
            Jitter::Decorrelated => {
                let upper = self.previous.checked_mul(3).unwrap_or(Duration::MAX);
                let drawn = base.saturating_add(uniform(&mut self.rng, upper.saturating_sub(base)));
                drawn.min(max)
            }
        };
        self.retry = self.retry.saturating_add(1);
        self.previous = wait;
        Some(wait)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// `min(max, base * 2^retry)`, saturating.
fn ceiling(base: Duration, max: Duration, retry: u32) -> Duration {
    // In nanoseconds, a u128 holds any Duration (under 2^94 ns) doubled 33
    // times; past that, or past `max`, the ceiling is `max`.
    match 1u128
        .checked_shl(retry)
        .and_then(|factor| base.as_nanos().checked_mul(factor))
    {
        Some(nanos) if nanos < max.as_nanos() => from_nanos(nanos),
        _ => max,
    }
}

/// A duration of `nanos`, which must fit in one.
fn from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// A duration drawn uniformly from zero to `upper`, both included.
fn uniform(rng: &mut SplitMix64, upper: Duration) -> Duration {
    let nanos = upper.as_nanos();
    let r = u128::from(rng.next());
    // Scale the 64 random bits onto 0..=nanos without overflowing u128: a
    // range wider than 64 bits loses its lowest bits, well under a second.
    let shift = (128 - (nanos + 1).leading_zeros()).saturating_sub(64);
    let drawn = ((r * ((nanos >> shift) + 1)) >> 64) << shift;
    from_nanos(drawn.min(nanos))
}

/// SplitMix64: a tiny, good-enough generator for jitter (not for secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_saturates() {
        let ms = Duration::from_millis;
        assert_eq!(ceiling(ms(1), ms(1000), 0), ms(1));
        assert_eq!(ceiling(ms(1), ms(1000), 3), ms(8));
        assert_eq!(ceiling(ms(1), ms(1000), 40), ms(1000));
        assert_eq!(ceiling(Duration::MAX, Duration::MAX, 1), Duration::MAX);
        assert_eq!(ceiling(ms(1), Duration::MAX, 63), ms(1 << 63));
        assert_eq!(
            ceiling(Duration::from_nanos(1), Duration::MAX, 64),
            Duration::from_nanos(1)
                .saturating_mul(1 << 16)
                .saturating_mul(1 << 16)
                .saturating_mul(1 << 16)
                .saturating_mul(1 << 16)
        );
        assert_eq!(ceiling(ms(1), Duration::MAX, 200), Duration::MAX);
    }

    #[test]
    fn uniform_stays_in_range_at_the_extremes() {
        let mut rng = SplitMix64(1);
        for upper in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
            for _ in 0..1000 {
                assert!(uniform(&mut rng, upper) <= upper);
            }
        }
        let mut max_rng = SplitMix64(0);
        max_rng.0 = u64::MAX;
        let _ = uniform(&mut max_rng, Duration::MAX);
    }

    #[test]
    fn refuses_a_zero_base_and_a_max_below_it() {
        let ms = Duration::from_millis;
        assert!(Backoff::exponential(Duration::ZERO, ms(1)).is_err());
        assert!(Backoff::exponential(ms(2), ms(1)).is_err());
        assert!(Backoff::exponential(ms(1), ms(1)).is_ok());
    }
}
