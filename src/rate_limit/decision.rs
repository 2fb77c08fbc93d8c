//! The outcome of one decision.

use std::fmt;
use std::time::Duration;

/// The outcome of one decision, with the state of its binding quota (the
/// one with the fewest cells left when allowed, the one that denied
/// otherwise), which the `RateLimit` header reports.
#[derive(Clone, Copy)]
pub struct Decision {
    allowed: bool,
    cached: bool,
    overflowed: bool,
    quota: u32,
    // `remaining` is `slack / per_cell`, divided only when asked for: most
    // decisions are never reported, and a 64-bit division costs more than
    // the rest of an in-memory decision. Times are whole nanoseconds, made
    // `Duration`s when asked for: a decision is built on every request and
    // read on few, so it stays 40 bytes.
    slack: u64,
    per_cell: u64,
    reset: u64,
    retry_after: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Decision {
    /// An allowed request: quota `quota` (an index into
    /// [`Limits::quotas`](super::Limits::quotas)) has `remaining` cells left
    /// and is full again after `reset` (kept in whole nanoseconds, up to
    /// some 584 years).
    pub fn allowed(quota: usize, remaining: u64, reset: Duration) -> Self {
        Self::allowed_nanos(quota, remaining, 1, nanos(reset))
    }

    /// A denied request: quota `quota` allows it again after `retry_after`.
    pub fn denied(quota: usize, remaining: u64, reset: Duration, retry_after: Duration) -> Self {
        Self::denied_nanos(quota, remaining, 1, nanos(reset), nanos(retry_after))
    }

    // `slack` nanoseconds of tolerance left, `per_cell` (non-zero) each cell.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    #[inline]
    pub(crate) fn allowed_slack(quota: usize, slack: u64, per_cell: u64, reset: Duration) -> Self {
        Self::allowed_nanos(quota, slack, per_cell, nanos(reset))
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    #[inline]
    pub(crate) fn denied_slack(
        quota: usize,
        slack: u64,
        per_cell: u64,
        reset: Duration,
        retry_after: Duration,
    ) -> Self {
        Self::denied_nanos(quota, slack, per_cell, nanos(reset), nanos(retry_after))
    }

    // As `allowed_slack`, with `reset` in nanoseconds.
    #[inline]
    pub(crate) fn allowed_nanos(quota: usize, slack: u64, per_cell: u64, reset: u64) -> Self {
        Self {
            allowed: true,
            cached: false,
            overflowed: false,
            quota: u32::try_from(quota).unwrap_or(u32::MAX),
            slack,
            per_cell,
            reset,
            retry_after: 0,
        }
    }

    // As `denied_slack`, with the times in nanoseconds.
    #[inline]
    pub(crate) fn denied_nanos(
        quota: usize,
        slack: u64,
        per_cell: u64,
        reset: u64,
        retry_after: u64,
    ) -> Self {
        Self {
            allowed: false,
            cached: false,
            overflowed: false,
            quota: u32::try_from(quota).unwrap_or(u32::MAX),
            slack,
            per_cell,
            reset,
            retry_after,
        }
    }

    /// The same decision, marked as answered by a cache in this process
    /// (such as `RedisStore`'s local deny cache) without asking the shared
    /// state; the layer counts such denials apart
    /// (`palisade_rate_limit_local_denials_total`, see
    /// [`crate::observability`]).
    #[must_use]
    pub fn cached(mut self) -> Self {
        self.cached = true;
        self
    }

    /// The same decision, marked as made on a shared overflow bucket: the
    /// store had no room for the key's own bucket (every slot held one
    /// still limiting its key), as [`MemoryStore`](super::MemoryStore) does
    /// when full. The layer counts such decisions
    /// (`palisade_rate_limit_overflow_decisions_total`, see
    /// [`crate::observability`]).
    #[must_use]
    pub fn overflowed(mut self) -> Self {
        self.overflowed = true;
        self
    }

    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Whether a cache in this process answered, see [`cached`](Self::cached).
    pub fn is_cached(&self) -> bool {
        self.cached
    }

    /// Whether a shared overflow bucket decided, see [`overflowed`](Self::overflowed).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// The index of the binding quota in [`Limits::quotas`](super::Limits::quotas).
    pub fn quota(&self) -> usize {
        self.quota as usize
    }

    /// Cells left in the binding quota after this decision.
    pub fn remaining(&self) -> u64 {
        self.slack / self.per_cell
    }

    /// Time until the binding quota is full again.
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset)
    }

    /// Time until the same request would be allowed (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }
}

// Equal when every accessor answers the same, however `remaining` is held.
impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        self.allowed == other.allowed
            && self.cached == other.cached
            && self.overflowed == other.overflowed
            && self.quota == other.quota
            && self.remaining() == other.remaining()
            && self.reset == other.reset
            && self.retry_after == other.retry_after
    }
}

impl Eq for Decision {}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.allowed)
            .field("cached", &self.cached)
            .field("overflowed", &self.overflowed)
            .field("quota", &self.quota)
            .field("remaining", &self.remaining())
            .field("reset", &self.reset())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_compare_by_what_they_report() {
        let reset = Duration::from_secs(3);
        let lazy = Decision::allowed_slack(0, 1_050, 100, reset);
        assert_eq!(lazy, Decision::allowed(0, 10, reset));
        assert_ne!(lazy, Decision::allowed(0, 11, reset));
        assert_eq!(
            format!("{lazy:?}"),
            format!("{:?}", Decision::allowed(0, 10, reset))
        );
    }
}
