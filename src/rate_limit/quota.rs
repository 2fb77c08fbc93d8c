//! Quotas: how many cells a key may spend, and how fast they come back.

use std::borrow::Cow;
use std::time::Duration;

/// One limit: a GCRA (generic cell rate algorithm) quota, that is a token
/// bucket that holds `burst` cells and regains one cell every `interval`.
///
/// `Quota::per_second(10)` allows 10 requests at once and then one every
/// 100 ms; `Quota::per_second(10).burst(20)` keeps the rate and lets 20
/// through at once. The emission interval is the period divided by the count,
/// truncated to whole nanoseconds (as in `governor`).
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    interval: Duration,
    burst: u32,
    name: Option<Cow<'static, str>>,
}

impl Quota {
    /// `count` cells per second, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is zero.
    pub fn per_second(count: u32) -> Self {
        Self::per_period(Duration::from_secs(1), count)
    }

    /// `count` cells per minute, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is zero.
    pub fn per_minute(count: u32) -> Self {
        Self::per_period(Duration::from_secs(60), count)
    }

    /// `count` cells per hour, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is zero.
    pub fn per_hour(count: u32) -> Self {
        Self::per_period(Duration::from_secs(3600), count)
    }

    /// `count` cells per `period`, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is zero. An interval under 1 ns is raised to 1 ns (as in
    /// `governor`).
    pub fn per_period(period: Duration, count: u32) -> Self {
        assert!(count > 0, "a quota needs at least one cell per period");
        let nanos = (period.as_nanos() / u128::from(count)).max(1);
        Self {
            interval: Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
            burst: count,
            name: None,
        }
    }

    /// One cell every `interval` (at least 1 ns), with a burst of 1.
    pub fn with_interval(interval: Duration) -> Self {
        Self::per_period(interval, 1)
    }

    /// Sets how many cells the bucket holds: the largest burst let through
    /// at once. The rate stays the same.
    ///
    /// # Panics
    ///
    /// If `burst` is zero.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        assert!(burst > 0, "a quota's burst must be at least 1");
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
            !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "a quota name must be non-empty printable ASCII"
        );
        self.name = Some(name);
        self
    }

    /// The time it takes to regain one cell.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The number of cells the bucket holds.
    pub fn max_burst(&self) -> u32 {
        self.burst
    }

    /// The time an empty bucket takes to fill up: `interval * burst`.
    pub fn window(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// The name given with [`named`](Self::named), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn interval_nanos(&self) -> u64 {
        u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX)
    }
}
