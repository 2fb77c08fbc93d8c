//! The generic cell rate algorithm (GCRA), in integer nanoseconds: what
//! every store decides with, so the memory store and the Redis script agree
//! (the Redis tests check the script against [`decide`]).
//!
//! Each quota keeps one number per key, its theoretical arrival time (TAT):
//! a request of `cost` cells is allowed when `max(tat, now) + cost *
//! interval` does not run more than `tau` (the burst's worth of intervals)
//! ahead of `now`.

use std::time::Duration;

use super::decision::Decision;

/// The largest interval and tolerance, 2^62 ns: far beyond any useful
/// quota, and far enough below `u64::MAX` that a clock reading plus a
/// tolerance never saturates.
pub(crate) const MAX_NANOS: u64 = 1 << 62;

/// GCRA parameters in nanoseconds: the emission interval and the tolerance
/// (`interval * burst`: how far the theoretical arrival time may run ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Gcra {
    pub(crate) interval: u64,
    pub(crate) tau: u64,
}

impl Gcra {
    /// The parameters of a quota: one cell every `interval` nanoseconds (at
    /// least 1), `burst` cells at once.
    /// Both are capped at [`MAX_NANOS`] (about 146 years), where a spent
    /// bucket stays spent: `now + tau` then never saturates, so a `next`
    /// that saturates is always denied.
    pub(crate) fn new(interval: u64, burst: u32) -> Self {
        let interval = interval.min(MAX_NANOS);
        Self {
            interval,
            tau: interval.saturating_mul(u64::from(burst)).min(MAX_NANOS),
        }
    }
}

/// The GCRA decision for one key, in nanoseconds: `tats` holds the
/// theoretical arrival time of each quota (0 for a key never seen) and is
/// updated only when every quota allows `cost` cells.
#[inline]
pub(crate) fn decide(tats: &mut [u64], now: u64, cost: u32, gcra: &[Gcra]) -> Decision {
    if let ([g], [tat]) = (gcra, &mut *tats) {
        // One quota, the common case: no search for the binding one.
        let (decision, next) = decide_one(*tat, now, cost, *g);
        if let Some(next) = next {
            *tat = next;
        }
        return decision;
    }
    decide_many(tats, now, cost, gcra)
}

// Several quotas: all must allow, and the binding one is reported.
#[inline(never)]
fn decide_many(tats: &mut [u64], now: u64, cost: u32, gcra: &[Gcra]) -> Decision {
    let cost = u64::from(cost);
    let mut denied: Option<(usize, u64)> = None;
    for (i, (g, &tat)) in gcra.iter().zip(tats.iter()).enumerate() {
        let next = tat.max(now).saturating_add(cost.saturating_mul(g.interval));
        let limit = now.saturating_add(g.tau);
        if next > limit {
            let wait = next - limit;
            if denied.is_none_or(|(_, w)| wait > w) {
                denied = Some((i, wait));
            }
        }
    }
    if let Some((i, wait)) = denied {
        let (g, tat) = (gcra[i], tats[i].max(now));
        // A `now` older than the state (a clock read on another core, or
        // `check_at` in the past) leaves nothing, not an underflow.
        let remaining = now.saturating_add(g.tau).saturating_sub(tat) / g.interval;
        return Decision::denied(
            i,
            remaining,
            Duration::from_nanos(tat - now),
            Duration::from_nanos(wait),
        );
    }
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, (g, tat)) in gcra.iter().zip(tats.iter_mut()).enumerate() {
        // Saturating as the check above: a quota of centuries per cell
        // must not wrap the state into letting requests through.
        let next = (*tat)
            .max(now)
            .saturating_add(cost.saturating_mul(g.interval));
        *tat = next;
        let remaining = now.saturating_add(g.tau).saturating_sub(next) / g.interval;
        let reset = next - now;
        if best.is_none_or(|(_, r, s)| remaining < r || (remaining == r && reset > s)) {
            best = Some((i, remaining, reset));
        }
    }
    let (i, remaining, reset) = best.expect("limits hold at least one quota");
    Decision::allowed(i, remaining, Duration::from_nanos(reset))
}

/// The GCRA decision under one quota for a key whose theoretical arrival
/// time is `tat`: the decision and, when allowed, the new `tat`.
#[inline]
pub(crate) fn decide_one(tat: u64, now: u64, cost: u32, g: Gcra) -> (Decision, Option<u64>) {
    let from = tat.max(now);
    let next = from.saturating_add(u64::from(cost).saturating_mul(g.interval));
    let limit = now.saturating_add(g.tau);
    if next > limit {
        // `from` may pass `limit` when `now` is older than the state.
        let decision = Decision::denied_nanos(
            0,
            limit.saturating_sub(from),
            g.interval,
            from - now,
            next - limit,
        );
        return (decision, None);
    }
    let decision = Decision::allowed_nanos(0, limit - next, g.interval, next - now);
    (decision, Some(next))
}
#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::rate_limit::{Limits, Quota};

    const SEC: u64 = 1_000_000_000;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_fresh_key_takes_its_burst_then_one_per_interval() {
        let limits = Limits::new([Quota::per_second(nz(10)).burst(nz(20))]);
        let mut tats = [0];
        for i in 0..20 {
            let d = decide(&mut tats, SEC, 1, limits.gcra());
            assert!(d.is_allowed(), "request {i}");
            assert_eq!(d.remaining(), 19 - i);
        }
        let d = decide(&mut tats, SEC, 1, limits.gcra());
        assert!(!d.is_allowed());
        assert_eq!(d.retry_after(), Duration::from_millis(100));
        assert!(decide(&mut tats, SEC + SEC / 10, 1, limits.gcra()).is_allowed());
    }

    #[test]
    fn a_denial_by_one_quota_spends_nothing_in_the_others() {
        let limits = Limits::new([Quota::per_second(nz(10)), Quota::per_hour(nz(3))]);
        let mut tats = [0, 0];
        for _ in 0..3 {
            assert!(decide(&mut tats, SEC, 1, limits.gcra()).is_allowed());
        }
        let before = tats;
        let d = decide(&mut tats, SEC, 1, limits.gcra());
        assert!(!d.is_allowed());
        assert_eq!(d.quota(), 1);
        assert_eq!(tats, before);
    }
}
