//! The store seam: where the GCRA state of each key lives.
//!
//! A [`Store`] decides one request against a set of [`Limits`] atomically:
//! every quota must allow it, and a denial consumes nothing.
//! [`MemoryStore`](super::MemoryStore) keeps the state in this process;
//! `RedisStore` (feature `redis`) keeps it in Redis so every instance of a
//! service sees one count.

use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::quota::Quota;

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Where the rate limiter state lives. Implementations decide atomically.
///
/// Clones share one state: the layer clones the store into every service it
/// builds, and all of them count against the same buckets.
pub trait Store: Clone + Send + Sync + 'static {
    /// Spends `cost` cells of `key` under every quota of `limits` if all of
    /// them have that many left, and otherwise spends nothing.
    fn check(
        &self,
        key: &str,
        limits: &Limits,
        cost: u32,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;
}

pub use crate::store::StoreError;

/// The outcome of one decision, with the state of its binding quota (the
/// one with the fewest cells left when allowed, the one that denied
/// otherwise), which the `RateLimit` header reports.
#[derive(Clone, Copy)]
pub struct Decision {
    allowed: bool,
    cached: bool,
    overflowed: bool,
    quota: usize,
    // `remaining` is `slack / per_cell`, divided only when asked for: most
    // decisions are never reported, and a 64-bit division costs more than
    // the rest of an in-memory decision.
    slack: u64,
    per_cell: u64,
    reset: Duration,
    retry_after: Duration,
}

impl Decision {
    /// An allowed request: quota `quota` (an index into
    /// [`Limits::quotas`]) has `remaining` cells left and is full again
    /// after `reset`.
    pub fn allowed(quota: usize, remaining: u64, reset: Duration) -> Self {
        Self::allowed_slack(quota, remaining, 1, reset)
    }

    /// A denied request: quota `quota` allows it again after `retry_after`.
    pub fn denied(quota: usize, remaining: u64, reset: Duration, retry_after: Duration) -> Self {
        Self::denied_slack(quota, remaining, 1, reset, retry_after)
    }

    // `slack` nanoseconds of tolerance left, `per_cell` (non-zero) each cell.
    #[inline]
    pub(crate) fn allowed_slack(quota: usize, slack: u64, per_cell: u64, reset: Duration) -> Self {
        Self {
            allowed: true,
            cached: false,
            overflowed: false,
            quota,
            slack,
            per_cell,
            reset,
            retry_after: Duration::ZERO,
        }
    }

    #[inline]
    pub(crate) fn denied_slack(
        quota: usize,
        slack: u64,
        per_cell: u64,
        reset: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            allowed: false,
            cached: false,
            overflowed: false,
            quota,
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

    /// The index of the binding quota in [`Limits::quotas`].
    pub fn quota(&self) -> usize {
        self.quota
    }

    /// Cells left in the binding quota after this decision.
    pub fn remaining(&self) -> u64 {
        self.slack / self.per_cell
    }

    /// Time until the binding quota is full again.
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// Time until the same request would be allowed (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
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
            .field("reset", &self.reset)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// The quotas one rate limiter enforces together, prepared for the stores:
/// a request passes only when every quota allows it.
///
/// Limiters with equal limits and scope share their counters in a shared
/// store; give routes that must count apart different
/// [`scope`](super::RateLimitLayer::scope)s.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    quotas: Box<[Quota]>,
    names: Box<[String]>,
    gcra: Box<[Gcra]>,
    // The only quota, beside the fingerprint: what the memory store's
    // lock-free slot compares on every decision.
    single: Option<Gcra>,
    scope: String,
    fingerprint: u64,
    max_cost: u32,
    policy: String,
}

/// GCRA parameters in nanoseconds: the emission interval and the tolerance
/// (`interval * burst`: how far the theoretical arrival time may run ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Gcra {
    pub(crate) interval: u64,
    pub(crate) tau: u64,
}

impl Limits {
    /// Prepares `quotas` (at least one) in the default, empty scope.
    ///
    /// Unnamed quotas are called `default`; repeated names get a `-2`, `-3`
    /// suffix so each policy in the headers has its own name.
    ///
    /// # Panics
    ///
    /// If `quotas` is empty.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        Self::build(quotas.into_iter().collect(), String::new())
    }

    /// The same limits in `scope`: limiters in different scopes never share
    /// counters.
    #[must_use]
    pub fn scoped(&self, scope: impl Into<String>) -> Self {
        Self::build(self.inner.quotas.to_vec(), scope.into())
    }

    /// The same limits with one more quota.
    #[must_use]
    pub fn with(&self, quota: Quota) -> Self {
        let mut quotas = self.inner.quotas.to_vec();
        quotas.push(quota);
        Self::build(quotas, self.inner.scope.clone())
    }

    fn build(quotas: Vec<Quota>, scope: String) -> Self {
        assert!(
            !quotas.is_empty(),
            "a rate limiter needs at least one quota"
        );
        let mut names: Vec<String> = Vec::with_capacity(quotas.len());
        for quota in &quotas {
            let base = quota.name().unwrap_or("default");
            let mut name = base.to_owned();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            names.push(name);
        }
        let gcra: Box<[Gcra]> = quotas
            .iter()
            .map(|q| Gcra {
                interval: q.interval_nanos(),
                tau: q.interval_nanos().saturating_mul(u64::from(q.max_burst())),
            })
            .collect();
        let mut hasher = DefaultHasher::new();
        (&scope, &names, &gcra).hash(&mut hasher);
        let max_cost = quotas.iter().map(Quota::max_burst).min().unwrap_or(1);
        let policy = super::headers::policy_field(&quotas, &names);
        Self {
            inner: Arc::new(LimitsInner {
                quotas: quotas.into_boxed_slice(),
                names: names.into_boxed_slice(),
                single: match *gcra {
                    [g] => Some(g),
                    _ => None,
                },
                gcra,
                scope,
                fingerprint: hasher.finish(),
                max_cost,
                policy,
            }),
        }
    }

    /// The quotas, in the order they were added.
    pub fn quotas(&self) -> &[Quota] {
        &self.inner.quotas
    }

    /// The policy name of quota `index`, as the headers show it.
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    pub fn name(&self, index: usize) -> &str {
        &self.inner.names[index]
    }

    /// The scope (empty by default).
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// The largest cost any request can ever be allowed: the smallest burst.
    pub fn max_cost(&self) -> u32 {
        self.inner.max_cost
    }

    /// The `RateLimit-Policy` field value that describes these limits.
    pub fn policy_field(&self) -> &str {
        &self.inner.policy
    }

    pub(crate) fn gcra(&self) -> &[Gcra] {
        &self.inner.gcra
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// The quota when there is only one.
    #[inline]
    pub(crate) fn single(&self) -> Option<Gcra> {
        self.inner.single
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("quotas", &self.inner.quotas)
            .field("names", &self.inner.names)
            .field("scope", &self.inner.scope)
            .finish()
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
        let next = (*tat).max(now) + cost * g.interval;
        *tat = next;
        let remaining = (now.saturating_add(g.tau) - next) / g.interval;
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
        let decision = Decision::denied_slack(
            0,
            limit.saturating_sub(from),
            g.interval,
            Duration::from_nanos(from - now),
            Duration::from_nanos(next - limit),
        );
        return (decision, None);
    }
    let decision = Decision::allowed_slack(
        0,
        limit - next,
        g.interval,
        Duration::from_nanos(next - now),
    );
    (decision, Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_key_takes_its_burst_then_one_per_interval() {
        let limits = Limits::new([Quota::per_second(10).burst(20)]);
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
        let limits = Limits::new([Quota::per_second(10), Quota::per_hour(3)]);
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

    #[test]
    fn names_are_made_unique() {
        let limits = Limits::new([
            Quota::per_second(1),
            Quota::per_hour(2),
            Quota::per_minute(1).named("m"),
        ]);
        assert_eq!(
            (limits.name(0), limits.name(1), limits.name(2)),
            ("default", "default-2", "m")
        );
    }

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
