//! The quotas of one limiter, prepared for the stores.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use super::gcra::Gcra;
use super::quota::Quota;

/// The quotas one rate limiter enforces together, prepared for the stores:
/// a request passes only when every quota allows it.
///
/// Limiters with equal limits and namespace share their counters in a
/// shared store; give routes that must count apart different
/// [`namespace`](super::RateLimitLayer::namespace)s.
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
    namespace: String,
    // The exact limits: what a cached denial is for.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fingerprint: u64,
    // The quotas the buckets are named by: these quotas, or the ones they
    // replaced at run time, so a key keeps its state across a replacement.
    named_by: Box<[Quota]>,
    // What names the buckets: namespace, names and `named_by`.
    bucket_id: u64,
    max_cost: u32,
    // The `RateLimit-Policy` value, built by `headers` the first time a
    // response or a 429 carries it.
    policy: OnceLock<String>,
}

impl Limits {
    /// Prepares `quotas` (at least one) in the default, empty namespace.
    ///
    /// Unnamed quotas are called `default`; repeated names get a `-2`, `-3`
    /// suffix so each policy in the headers has its own name.
    ///
    /// # Panics
    ///
    /// If `quotas` is empty.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Self {
        Self::build(quotas.into_iter().collect(), String::new(), None)
    }

    /// The same limits in `namespace`: limiters in different namespaces
    /// never share counters.
    #[must_use]
    pub fn namespaced(&self, namespace: impl Into<String>) -> Self {
        Self::build(self.inner.quotas.to_vec(), namespace.into(), None)
    }

    /// The same limits with one more quota.
    #[must_use]
    pub fn with(&self, quota: Quota) -> Self {
        let mut quotas = self.inner.quotas.to_vec();
        quotas.push(quota);
        Self::build(quotas, self.inner.namespace.clone(), None)
    }

    /// These limits with `quotas` in force instead, in the same namespace,
    /// for a replacement at run time: when there are as many quotas as
    /// before, under the same names, every key keeps its buckets (see
    /// [`Handle`](super::Handle) for what a bucket means under its new
    /// quota); otherwise the keys start on fresh buckets.
    pub(crate) fn replaced(&self, quotas: Vec<Quota>) -> Self {
        let replaced = Self::build(quotas, self.inner.namespace.clone(), None);
        if *replaced.inner.names != *self.inner.names {
            return replaced;
        }
        Self::build(
            replaced.inner.quotas.to_vec(),
            self.inner.namespace.clone(),
            Some(self.inner.named_by.clone()),
        )
    }

    fn build(quotas: Vec<Quota>, namespace: String, named_by: Option<Box<[Quota]>>) -> Self {
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
            .map(|q| Gcra::new(q.interval_nanos(), q.max_burst().get()))
            .collect();
        let mut hasher = DefaultHasher::new();
        (&namespace, &names, &gcra).hash(&mut hasher);
        let fingerprint = hasher.finish();
        let named_by = named_by.unwrap_or_else(|| quotas.clone().into_boxed_slice());
        // A named quota's buckets are found by its name alone, so instances
        // that run different values of it (one reloaded at run time, one
        // started with the new value) share them; an unnamed one's also by
        // the rate and burst it was built with, so unnamed quotas of two
        // limiters in one namespace count apart.
        let bucket_gcra: Vec<Option<Gcra>> = quotas
            .iter()
            .zip(named_by.iter())
            .map(|(q, by)| {
                q.name()
                    .is_none()
                    .then(|| Gcra::new(by.interval_nanos(), by.max_burst().get()))
            })
            .collect();
        let mut hasher = DefaultHasher::new();
        (&namespace, &names, &bucket_gcra).hash(&mut hasher);
        let bucket_id = hasher.finish();
        let max_cost = quotas
            .iter()
            .map(|q| q.max_burst().get())
            .min()
            .unwrap_or(1);
        Self {
            inner: Arc::new(LimitsInner {
                quotas: quotas.into_boxed_slice(),
                names: names.into_boxed_slice(),
                single: match *gcra {
                    [g] => Some(g),
                    _ => None,
                },
                gcra,
                namespace,
                fingerprint,
                named_by,
                bucket_id,
                max_cost,
                policy: OnceLock::new(),
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

    /// The namespace (empty by default).
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The largest cost any request can ever be allowed: the smallest burst.
    pub fn max_cost(&self) -> u32 {
        self.inner.max_cost
    }

    /// The `RateLimit-Policy` field value that describes these limits (see
    /// [`RateLimitHeaders`](super::RateLimitHeaders) for the syntax).
    pub fn policy_field(&self) -> &str {
        self.inner
            .policy
            .get_or_init(|| super::headers::policy_field(self))
    }

    pub(crate) fn gcra(&self) -> &[Gcra] {
        &self.inner.gcra
    }

    #[cfg(feature = "redis")]
    pub(crate) fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// What the buckets are named by: equal for limits that replaced others
    /// at run time and the ones they replaced (see [`replaced`](Self::replaced)).
    #[inline]
    pub(crate) fn bucket_id(&self) -> u64 {
        self.inner.bucket_id
    }

    /// The quotas the buckets of unnamed quotas are named by (a Redis key
    /// holds their interval and burst): these quotas, or the ones they
    /// replaced.
    #[cfg(feature = "redis")]
    pub(crate) fn named_by(&self) -> &[Quota] {
        &self.inner.named_by
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
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn names_are_made_unique() {
        let limits = Limits::new([
            Quota::per_second(nz(1)),
            Quota::per_hour(nz(2)),
            Quota::per_minute(nz(1)).named("m"),
        ]);
        assert_eq!(
            (limits.name(0), limits.name(1), limits.name(2)),
            ("default", "default-2", "m")
        );
    }
}
