//! Quotas: how many cells a key may spend, and how fast they come back.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::time::Duration;

/// One limit: a GCRA (generic cell rate algorithm) quota, that is a token
/// bucket that holds `burst` cells and regains one cell every `interval`.
///
/// Ten per second (`Quota::per_second(ten)`) allows 10 requests at once and
/// then one every 100 ms; `.burst(twenty)` keeps the rate and lets 20
/// through at once. The emission interval is the period divided by the count,
/// truncated to whole nanoseconds and at least 1 ns (as in `governor`).
///
/// Counts are [`NonZeroU32`] and the constructors are `const fn`, so a quota
/// that allows nothing cannot be written and a quota can be a `const`:
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use palisade::rate_limit::Quota;
///
/// const TEN: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// const API: Quota = Quota::per_second(TEN).burst(NonZeroU32::new(20).unwrap());
/// assert_eq!(API.interval(), Duration::from_millis(100));
/// assert_eq!(API.max_burst().get(), 20);
/// // A zero period is no quota.
/// assert!(Quota::per_period(Duration::ZERO, TEN).is_none());
/// ```
///
/// See the [module docs](super) for a layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    interval: Duration,
    burst: NonZeroU32,
    name: Option<Cow<'static, str>>,
}

const ONE_SECOND: Duration = Duration::from_secs(1);
const ONE_MINUTE: Duration = Duration::from_secs(60);
const ONE_HOUR: Duration = Duration::from_secs(3600);

impl Quota {
    /// `count` cells per second, with a burst of `count`.
    pub const fn per_second(count: NonZeroU32) -> Self {
        Self::of_period(ONE_SECOND, count)
    }

    /// `count` cells per minute, with a burst of `count`.
    pub const fn per_minute(count: NonZeroU32) -> Self {
        Self::of_period(ONE_MINUTE, count)
    }

    /// `count` cells per hour, with a burst of `count`.
    pub const fn per_hour(count: NonZeroU32) -> Self {
        Self::of_period(ONE_HOUR, count)
    }

    /// `count` cells per `period`, with a burst of `count`; `None` when
    /// `period` is zero (such a quota would refill instantly). An interval
    /// under 1 ns is raised to 1 ns (as in `governor`).
    pub const fn per_period(period: Duration, count: NonZeroU32) -> Option<Self> {
        if period.is_zero() {
            return None;
        }
        Some(Self::of_period(period, count))
    }

    /// One cell every `interval`, with a burst of 1; `None` when `interval`
    /// is zero (as `governor`'s `Quota::with_period`).
    pub const fn with_interval(interval: Duration) -> Option<Self> {
        Self::per_period(interval, NonZeroU32::MIN)
    }

    const fn of_period(period: Duration, count: NonZeroU32) -> Self {
        let nanos = period.as_nanos() / count.get() as u128;
        let nanos = if nanos == 0 {
            1
        } else if nanos > u64::MAX as u128 {
            u64::MAX
        } else {
            nanos as u64
        };
        Self {
            interval: Duration::from_nanos(nanos),
            burst: count,
            name: None,
        }
    }

    /// Sets how many cells the bucket holds: the largest burst let through
    /// at once. The rate stays the same.
    #[must_use]
    pub const fn burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// Names the quota in the `RateLimit-Policy` and `RateLimit` headers
    /// (default: `"default"`, made unique when a layer has several).
    ///
    /// # Panics
    ///
    /// If `name` is empty or holds anything but printable ASCII.
    #[must_use]
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        assert!(
            is_name(&name),
            "a quota name must be non-empty printable ASCII"
        );
        self.name = Some(name);
        self
    }

    /// The time it takes to regain one cell.
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// The number of cells the bucket holds.
    pub const fn max_burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The time an empty bucket takes to fill up: `interval * burst`.
    pub const fn window(&self) -> Duration {
        self.interval.saturating_mul(self.burst.get())
    }

    /// The name given with [`named`](Self::named), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn interval_nanos(&self) -> u64 {
        u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Whether `name` can name a quota (and so a tier): non-empty printable
/// ASCII, as a `RateLimit-Policy` item and a Redis key can carry it.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_zero_period_is_no_quota_and_tiny_intervals_are_raised_to_1ns() {
        assert_eq!(Quota::per_period(Duration::ZERO, nz(3)), None);
        assert_eq!(Quota::with_interval(Duration::ZERO), None);
        let tiny = Quota::per_period(Duration::from_nanos(1), nz(u32::MAX)).unwrap();
        assert_eq!(tiny.interval(), Duration::from_nanos(1));
        let huge = Quota::per_period(Duration::MAX, nz(1)).unwrap();
        assert_eq!(huge.interval_nanos(), u64::MAX);
    }

    #[test]
    fn per_second_minute_and_hour_divide_their_period() {
        assert_eq!(
            Quota::per_second(nz(4)).interval(),
            Duration::from_millis(250)
        );
        assert_eq!(Quota::per_minute(nz(2)).interval(), Duration::from_secs(30));
        assert_eq!(Quota::per_hour(nz(3600)).interval(), Duration::from_secs(1));
        let q = Quota::per_second(nz(10)).burst(nz(20));
        assert_eq!(
            (q.max_burst().get(), q.window()),
            (20, Duration::from_secs(2))
        );
    }
}
