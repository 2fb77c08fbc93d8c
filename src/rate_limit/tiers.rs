//! Quotas chosen per request (tiers), replaceable at run time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::limits::Limits;
use super::quota::Quota;

/// Chooses the tier of a request (such as the caller's plan): its name, or
/// `None` for the default tier. [`DefaultTier`] (the default) puts every
/// request in the default tier; any `fn(&Req) -> Option<&str>` is an
/// extractor.
///
/// Take the tier from what the server trusts (an extension your
/// authentication layer sets), not from a header the caller writes: a
/// caller who names its own tier picks its own quota.
///
/// ```
/// use http::Request;
///
/// #[derive(Clone, Copy)]
/// enum Plan { Free, Pro }
///
/// fn plan<B>(req: &Request<B>) -> Option<&str> {
///     match req.extensions().get::<Plan>()? {
///         Plan::Free => Some("free"),
///         Plan::Pro => Some("pro"),
///     }
/// }
/// # let _ = plan::<()>;
/// ```
pub trait TierExtractor<Req>: Clone + Send + Sync + 'static {
    /// The tier of `req`; `None`, or a name with no tier, is the default
    /// tier.
    fn tier<'r>(&self, req: &'r Req) -> Option<&'r str>;
}

/// Every request is in the default tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTier;

impl<Req> TierExtractor<Req> for DefaultTier {
    #[inline]
    fn tier<'r>(&self, _: &'r Req) -> Option<&'r str> {
        None
    }
}

impl<Req, F> TierExtractor<Req> for F
where
    F: for<'r> Fn(&'r Req) -> Option<&'r str> + Clone + Send + Sync + 'static,
{
    #[inline]
    fn tier<'r>(&self, req: &'r Req) -> Option<&'r str> {
        self(req)
    }
}

/// Why a tier was refused; the tiers in force stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTier {
    /// The tier was given no quota.
    #[error("a rate limit tier needs at least one quota")]
    NoQuota,
    /// The tier's name is not 1 to 64 printable ASCII characters (it
    /// names the quotas in `RateLimit-Policy`).
    #[error("rate limit tier name {0:?} is not 1 to 64 printable ASCII characters")]
    Name(String),
}

/// Refuses a tier name that is not 1 to 64 printable ASCII characters.
pub(crate) fn check_name(name: &str) -> Result<(), InvalidTier> {
    if name.len() > 64 || !super::quota::is_name(name) {
        return Err(InvalidTier::Name(name.to_owned()));
    }
    Ok(())
}

fn check(name: &str, quotas: &[Quota]) -> Result<(), InvalidTier> {
    check_name(name)?;
    if quotas.is_empty() {
        return Err(InvalidTier::NoQuota);
    }
    Ok(())
}

/// The limits of every tier, as one value: replaced whole, never changed in
/// place.
#[derive(Clone)]
pub(crate) struct Tiers {
    pub(crate) default: Limits,
    // Few tiers: a list searched in order beats a map.
    named: Vec<(Arc<str>, Limits)>,
}

impl Tiers {
    /// The limits of a request in `tier`.
    #[inline]
    pub(crate) fn select(&self, tier: Option<&str>) -> &Limits {
        match tier {
            None => &self.default,
            Some(tier) => self
                .named
                .iter()
                .find(|(name, _)| **name == *tier)
                .map_or(&self.default, |(_, limits)| limits),
        }
    }

    fn get(&self, tier: &str) -> Option<&Limits> {
        self.named
            .iter()
            .find(|(name, _)| **name == *tier)
            .map(|(_, limits)| limits)
    }
}

/// Names a tier's unnamed quotas after it, so `RateLimit-Policy` shows the
/// tier and each tier's buckets are its own.
fn named_after(tier: &str, quotas: impl IntoIterator<Item = Quota>) -> Vec<Quota> {
    quotas
        .into_iter()
        .map(|q| {
            if q.name().is_some() {
                q
            } else {
                q.named(tier.to_owned())
            }
        })
        .collect()
}

/// The tiers a layer and its services share, replaced atomically: a request
/// reads them without a lock, and a replacement applies from the next
/// decision on.
pub(crate) struct Quotas {
    current: ArcSwap<Tiers>,
    // Bumped after every replacement: a service compares it with the one
    // of its snapshot (one load of a line nobody writes while quotas stay),
    // and loads the current tiers only when they changed.
    version: AtomicU64,
}

/// The tiers as a service found them when it was built, and their version.
#[derive(Clone)]
pub(crate) struct Snapshot {
    version: u64,
    tiers: Arc<Tiers>,
}

/// The tiers a decision reads: the service's snapshot, or the ones in force
/// when they changed since.
pub(crate) enum Current<'a> {
    Snapshot(&'a Tiers),
    Loaded(arc_swap::Guard<Arc<Tiers>>),
}

impl std::ops::Deref for Current<'_> {
    type Target = Tiers;

    #[inline]
    fn deref(&self) -> &Tiers {
        match self {
            Current::Snapshot(tiers) => tiers,
            Current::Loaded(tiers) => tiers,
        }
    }
}

impl Quotas {
    pub(crate) fn new(default: Limits) -> Self {
        Self {
            current: ArcSwap::from_pointee(Tiers {
                default,
                named: Vec::new(),
            }),
            version: AtomicU64::new(0),
        }
    }

    /// The tiers in force, without a lock.
    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Tiers>> {
        self.current.load()
    }

    /// The tiers in force and their version, for a service to keep.
    pub(crate) fn snapshot(&self) -> Snapshot {
        // The version first: tiers newer than it only send the service to
        // `load` once more, while older ones would be kept as current.
        let version = self.version.load(Ordering::Acquire);
        Snapshot {
            version,
            tiers: self.current.load_full(),
        }
    }

    /// The tiers in force: `snapshot`'s while no replacement came since.
    #[inline]
    pub(crate) fn current<'a>(&self, snapshot: &'a Snapshot) -> Current<'a> {
        if self.version.load(Ordering::Acquire) == snapshot.version {
            Current::Snapshot(&snapshot.tiers)
        } else {
            Current::Loaded(self.current.load())
        }
    }

    /// Replaces the tiers by `change` applied to a copy of them.
    fn update(&self, mut change: impl FnMut(&mut Tiers)) {
        self.current.rcu(|tiers| {
            let mut tiers = Tiers::clone(tiers);
            change(&mut tiers);
            tiers
        });
        // After the swap: a decision that sees the new version sees the new
        // tiers.
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn add_quota(&self, quota: Quota) {
        self.update(|t| t.default = t.default.with(quota.clone()));
    }

    pub(crate) fn set_namespace(&self, namespace: &str) {
        self.update(|t| {
            t.default = t.default.namespaced(namespace);
            for (_, limits) in &mut t.named {
                *limits = limits.namespaced(namespace);
            }
        });
    }

    /// Adds tier `name`, or replaces its quotas (keeping its buckets, see
    /// [`Handle`]).
    pub(crate) fn set_tier(&self, name: &str, quotas: Vec<Quota>) -> Result<(), InvalidTier> {
        check(name, &quotas)?;
        let quotas = named_after(name, quotas);
        self.update(|t| match t.named.iter_mut().find(|(n, _)| **n == *name) {
            Some((_, limits)) => *limits = limits.replaced(quotas.clone()),
            None => {
                let limits = Limits::new(quotas.clone()).namespaced(t.default.namespace());
                t.named.push((name.into(), limits));
            }
        });
        Ok(())
    }

    pub(crate) fn set_default(&self, quotas: Vec<Quota>) -> Result<(), InvalidTier> {
        if quotas.is_empty() {
            return Err(InvalidTier::NoQuota);
        }
        self.update(|t| t.default = t.default.replaced(quotas.clone()));
        Ok(())
    }

    fn remove_tier(&self, name: &str) -> bool {
        let mut removed = false;
        self.update(|t| {
            let before = t.named.len();
            t.named.retain(|(n, _)| **n != *name);
            removed = t.named.len() < before;
        });
        removed
    }
}

impl fmt::Debug for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tiers = self.load();
        f.debug_struct("Quotas")
            .field("default", &tiers.default)
            .field("tiers", &tiers.named)
            .finish()
    }
}

/// Reads and replaces the quotas of a [`RateLimitLayer`](super::RateLimitLayer)
/// while it runs: every service the layer (or a clone of it) built decides
/// its next request under the new quotas, on any store.
///
/// # A bucket under its new quota
///
/// A replacement that keeps the quotas' number and names (the usual case:
/// a tier's rate changes) keeps every key's buckets, in memory and in Redis.
/// A bucket's state is the moment it will be full again (GCRA's theoretical
/// arrival time), and that moment stays: what the bucket holds is then read
/// under the new quota.
///
/// - A quota over the same window keeps each caller's used share: a caller
///   that spent 90 of a 100-per-minute burst has spent 900 of a
///   1,000-per-minute one, and earns cells back at the new rate from the
///   next request on.
/// - When a quota shrinks its window (its burst's worth of time), a bucket
///   that holds more than the new burst waits until the excess has drained,
///   as if it had been spent under the new quota: never longer than the old
///   window.
/// - A replacement with another number of quotas, or other names, starts
///   every key on a fresh bucket.
///
/// Across a fleet, name the quotas you change at run time (a tier's are
/// named after it): a named quota's buckets are found by its name, so an
/// instance reloaded to a new value and one started with it share them. An
/// unnamed quota's buckets are also found by the rate it was built with.
///
/// A denial that a [`RedisStore`](super::RedisStore) remembers in this
/// process is for the quotas it was decided under: a replacement ends it.
///
/// ```
/// use std::num::NonZeroU32;
/// use palisade::rate_limit::{Quota, RateLimitLayer};
///
/// let free = Quota::per_minute(NonZeroU32::new(100).unwrap());
/// let layer = RateLimitLayer::new(free)
///     .tier("pro", [Quota::per_minute(NonZeroU32::new(1_000).unwrap())]);
/// let handle = layer.handle();
///
/// // Pro customers get 2,000 a minute from the next request on.
/// handle.set_tier("pro", [Quota::per_minute(NonZeroU32::new(2_000).unwrap())]).unwrap();
/// assert_eq!(handle.tier("pro").unwrap().quotas()[0].max_burst().get(), 2_000);
/// ```
#[derive(Clone)]
pub struct Handle {
    quotas: Arc<Quotas>,
}

impl Handle {
    pub(crate) fn new(quotas: Arc<Quotas>) -> Self {
        Self { quotas }
    }

    /// The limits of the default tier.
    pub fn limits(&self) -> Limits {
        self.quotas.load().default.clone()
    }

    /// The limits of tier `name`, if the layer has it.
    pub fn tier(&self, name: &str) -> Option<Limits> {
        self.quotas.load().get(name).cloned()
    }

    /// The names of the tiers besides the default, in the order they were
    /// added.
    pub fn tier_names(&self) -> Vec<String> {
        let tiers = self.quotas.load();
        tiers
            .named
            .iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Replaces the default tier's quotas, from the next decision on.
    pub fn set_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<(), InvalidTier> {
        self.quotas.set_default(quotas.into_iter().collect())
    }

    /// Adds tier `name` or replaces its quotas, from the next decision on.
    /// Unnamed quotas are named after the tier. A name that is not 1 to 64
    /// printable ASCII characters, or no quota, is refused and changes
    /// nothing.
    pub fn set_tier(
        &self,
        name: &str,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Result<(), InvalidTier> {
        self.quotas.set_tier(name, quotas.into_iter().collect())
    }

    /// Removes tier `name`: its requests fall to the default tier. Whether
    /// the layer had it.
    pub fn remove_tier(&self, name: &str) -> bool {
        self.quotas.remove_tier(name)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.quotas).finish()
    }
}
