//! The latency window: a lock-free log-linear histogram per sub-window, and
//! the hedge delay read from it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Sub-buckets per power of two: a bucket is at most 1/32 (3.1%) of its
/// lowest value wide.
const SUB: u32 = 32;
/// Values below `2 * SUB` microseconds have a bucket each.
const LINEAR: u64 = 2 * SUB as u64;
/// Groups of `SUB` buckets: two linear ones (0..64 µs), then one per power
/// of two from 2^6 µs up to 2^36 µs (about 19 hours), where values saturate.
const GROUPS: usize = 32;
const BUCKETS: usize = GROUPS * SUB as usize;
/// The largest value kept, in microseconds; longer latencies count as this.
const MAX_US: u64 = (1 << (GROUPS as u64 + 4)) - 1;
/// Sub-windows: a sample counts for between 3/4 of the window and the
/// whole window.
pub(crate) const SLOTS: u64 = 4;
/// The delay is computed again every this many samples of a sub-window.
const RECOMPUTE_EVERY: u32 = 16;
/// No delay: not enough samples.
const NONE: u64 = u64::MAX;

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    let us = us.min(MAX_US);
    if us < LINEAR {
        return us as usize;
    }
    // 2^k <= us < 2^(k+1), k >= 6; the top 6 bits (a leading 1 and 5 bits)
    // pick the bucket within the power of two.
    let k = 63 - u64::from(us.leading_zeros());
    let shift = k - 5;
    (u64::from(SUB) * (shift) + (us >> shift)) as usize
}

/// The largest value of bucket `b`, in microseconds.
fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let shift = b / u64::from(SUB) - 1;
    let mantissa = b % u64::from(SUB) + u64::from(SUB);
    ((mantissa + 1) << shift) - 1
}

/// A delay as cached: nanoseconds, or [`NONE`].
fn nanos_of(delay: Option<Duration>) -> u64 {
    delay.map_or(NONE, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
    })
}

/// One sub-window's counts.
#[derive(Debug)]
struct Slot {
    /// The sub-window's index plus one; 0 while never used.
    epoch: AtomicU64,
    total: AtomicU32,
    groups: [AtomicU32; GROUPS],
    buckets: Box<[AtomicU32]>,
}

impl Slot {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            total: AtomicU32::new(0),
            groups: std::array::from_fn(|_| AtomicU32::new(0)),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn clear(&self) {
        self.total.store(0, Ordering::Relaxed);
        for c in self.groups.iter().chain(self.buckets.iter()) {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The latencies of the last window, and the delay they give.
///
/// Recording is three uncontended-in-spirit atomic increments; the delay is
/// a cached value, computed again by the first recording or reading in a
/// new sub-window and every [`RECOMPUTE_EVERY`] samples, by a walk of 32 group
/// counts and 32 buckets per sub-window. A sub-window that rotates while
/// another thread records into it may lose that sample or keep it a
/// sub-window longer: the window is statistical, not exact.
#[derive(Debug)]
pub(crate) struct Stats {
    origin: Instant,
    sub_nanos: u64,
    slots: [Slot; SLOTS as usize],
    percentile: f64,
    min_samples: u32,
    min_delay: Duration,
    /// The delay in nanoseconds, or [`NONE`].
    cached: AtomicU64,
    /// The epoch (sub-window index plus one) the cached delay was computed in.
    cached_epoch: AtomicU64,
}

impl Stats {
    pub(crate) fn new(
        window: Duration,
        percentile: f64,
        min_samples: u32,
        min_delay: Duration,
    ) -> Self {
        let sub = window / SLOTS as u32;
        Self {
            origin: Instant::now(),
            sub_nanos: u64::try_from(sub.as_nanos()).unwrap_or(u64::MAX).max(1),
            slots: std::array::from_fn(|_| Slot::new()),
            percentile,
            min_samples,
            min_delay,
            cached: AtomicU64::new(NONE),
            cached_epoch: AtomicU64::new(0),
        }
    }

    /// The epoch of `now`: its sub-window's index plus one.
    fn epoch(&self, now: Instant) -> u64 {
        let nanos = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        nanos / self.sub_nanos + 1
    }

    /// The hedge delay at `now`, or `None` while the window holds fewer than
    /// `min_samples` samples.
    #[inline]
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        let epoch = self.epoch(now);
        let cached_epoch = self.cached_epoch.load(Ordering::Relaxed);
        // The window moved since the delay was computed, and some of the
        // samples it came from may have expired: one caller computes it
        // again, once per sub-window at most (a recording does the same
        // when it starts a sub-window, but none may come before this call).
        if epoch > cached_epoch
            && self
                .cached_epoch
                .compare_exchange(cached_epoch, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let delay = self.compute(epoch);
            self.cached.store(nanos_of(delay), Ordering::Relaxed);
            return delay;
        }
        let nanos = self.cached.load(Ordering::Relaxed);
        (nanos != NONE).then(|| Duration::from_nanos(nanos))
    }

    /// Records one latency at `now`; returns the delay when it was computed
    /// again (for the gauge).
    pub(crate) fn record(&self, now: Instant, latency: Duration) -> Option<Option<Duration>> {
        let epoch = self.epoch(now);
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        let mut rotated = false;
        if seen < epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.clear();
            rotated = true;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let b = bucket(us);
        slot.buckets[b].fetch_add(1, Ordering::Relaxed);
        slot.groups[b / SUB as usize].fetch_add(1, Ordering::Relaxed);
        let n = slot.total.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let cached = self.cached.load(Ordering::Relaxed);
        if rotated || n.is_multiple_of(RECOMPUTE_EVERY) || cached == NONE {
            let delay = self.compute(epoch);
            self.cached.store(nanos_of(delay), Ordering::Relaxed);
            self.cached_epoch.store(epoch, Ordering::Relaxed);
            return Some(delay);
        }
        None
    }

    /// The slots of the window ending in `epoch`.
    fn live(&self, epoch: u64) -> impl Iterator<Item = &Slot> + Clone {
        self.slots.iter().filter(move |s| {
            let e = s.epoch.load(Ordering::Acquire);
            e != 0 && e <= epoch && e + SLOTS > epoch
        })
    }

    /// The samples in the window ending at `now`.
    pub(crate) fn samples(&self, now: Instant) -> u64 {
        self.live(self.epoch(now))
            .map(|s| u64::from(s.total.load(Ordering::Relaxed)))
            .sum()
    }

    /// The delay for the window ending in `epoch`.
    fn compute(&self, epoch: u64) -> Option<Duration> {
        let us = self.quantile_at(epoch, self.percentile, u64::from(self.min_samples))?;
        Some(Duration::from_micros(us).max(self.min_delay))
    }

    /// The `q` quantile of the window ending at `now`, if it holds any
    /// sample: within 3.1% above the exact one.
    pub(crate) fn quantile(&self, now: Instant, q: f64) -> Option<Duration> {
        self.quantile_at(self.epoch(now), q, 1)
            .map(Duration::from_micros)
    }

    /// The nearest-rank `q` quantile, in microseconds: the upper bound of
    /// the bucket that holds it. `None` below `min` samples.
    fn quantile_at(&self, epoch: u64, q: f64, min: u64) -> Option<u64> {
        let live = self.live(epoch);
        let total: u64 = live
            .clone()
            .map(|s| u64::from(s.total.load(Ordering::Relaxed)))
            .sum();
        if total == 0 || total < min {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let mut last = None;
        for g in 0..GROUPS {
            let in_group: u64 = live
                .clone()
                .map(|s| u64::from(s.groups[g].load(Ordering::Relaxed)))
                .sum();
            if in_group == 0 {
                continue;
            }
            if seen + in_group < rank {
                seen += in_group;
                last = Some(g);
                continue;
            }
            for b in g * SUB as usize..(g + 1) * SUB as usize {
                seen += live
                    .clone()
                    .map(|s| u64::from(s.buckets[b].load(Ordering::Relaxed)))
                    .sum::<u64>();
                if seen >= rank {
                    return Some(upper(b));
                }
            }
            // Counts moved under a concurrent recording: the group's top.
            return Some(upper((g + 1) * SUB as usize - 1));
        }
        // Totals ahead of the groups under a concurrent recording.
        last.map(|g| upper((g + 1) * SUB as usize - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut previous = None;
        for us in (0..5000).chain([MAX_US - 1, MAX_US, MAX_US + 1, u64::MAX]) {
            let b = bucket(us);
            assert!(b < BUCKETS, "{us}");
            assert!(upper(b) >= us.min(MAX_US), "{us}");
            if let Some(p) = previous
                && us < 5000
            {
                assert!(b == p || b == p + 1, "{us}");
            }
            previous = Some(b);
        }
        assert_eq!(upper(BUCKETS - 1), MAX_US);
        for b in LINEAR as usize..BUCKETS {
            let low = upper(b - 1) + 1;
            assert!((upper(b) - low) * u64::from(SUB) <= low, "bucket {b}");
        }
    }

    fn exact(mut values: Vec<u64>, q: f64) -> u64 {
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    proptest! {
        #[test]
        fn a_quantile_is_within_a_bucket_of_the_exact_one(
            nanos in prop::collection::vec(
                prop_oneof![0u64..200_000_000, any::<u64>(), Just(u64::MAX)],
                1..300,
            ),
            q in 0.001f64..0.999,
            max in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let stats = Stats::new(Duration::from_secs(10), q, 1, Duration::ZERO);
                let now = Instant::now();
                let mut latencies: Vec<Duration> = nanos.iter().map(|&n| Duration::from_nanos(n)).collect();
                if max {
                    latencies.push(Duration::MAX);
                }
                for &l in &latencies {
                    stats.record(now, l);
                }
                let exact = exact(
                    latencies.iter().map(|l| (l.as_micros().min(u128::from(MAX_US))) as u64).collect(),
                    q,
                );
                let got = stats.quantile(now, q).unwrap().as_micros() as u64;
                prop_assert!(got >= exact, "got {got}, exact {exact}");
                prop_assert!(got <= exact + exact / u64::from(SUB) + 1, "got {got}, exact {exact}");
                prop_assert_eq!(stats.samples(now), latencies.len() as u64);
                prop_assert!(stats.delay(now).is_some());
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_expire_with_their_sub_window() {
        let stats = Stats::new(Duration::from_secs(4), 0.5, 2, Duration::ZERO);
        let ms = Duration::from_millis;
        stats.record(Instant::now(), ms(100));
        assert_eq!(stats.delay(Instant::now()), None, "one sample of two");
        stats.record(Instant::now(), ms(100));
        assert!(stats.delay(Instant::now()).unwrap() >= ms(100));
        tokio::time::advance(Duration::from_secs(3)).await;
        stats.record(Instant::now(), ms(1));
        stats.record(Instant::now(), ms(1));
        assert_eq!(stats.samples(Instant::now()), 4, "3 s into a 4 s window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(stats.samples(Instant::now()), 2, "the first second expired");
        stats.record(Instant::now(), ms(1));
        let delay = stats.delay(Instant::now()).unwrap();
        assert!(delay >= ms(1) && delay < ms(2), "{delay:?}");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(stats.delay(Instant::now()), None, "every sample expired");
    }

    #[test]
    fn concurrent_recordings_across_sub_windows_keep_the_delay_in_range() {
        use std::sync::Arc;
        let window = Duration::from_secs(4);
        let stats = Arc::new(Stats::new(window, 0.9, 20, Duration::ZERO));
        let origin = stats.origin;
        let sub = window / SLOTS as u32;
        // Every latency is 1 to 2 ms: any delay, even one read while a
        // sub-window rotates under it, is within the buckets of that range
        // (a group's top at worst: below 2.1 ms).
        let in_range =
            |d: Duration| d >= Duration::from_millis(1) && d < Duration::from_micros(2100);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let now = origin + sub * u32::try_from(i / 1000).unwrap();
                        let latency = Duration::from_micros(1000 + (i * 7 + t * 13) % 1000);
                        if let Some(Some(delay)) = stats.record(now, latency) {
                            assert!(in_range(delay), "{delay:?}");
                        }
                        if let Some(delay) = stats.delay(now) {
                            assert!(in_range(delay), "{delay:?}");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let end = origin + sub * 19;
        // A thread a few sub-windows behind may record into a newer one.
        let samples = stats.samples(end);
        assert!(samples > 0 && samples <= 4 * 20_000, "{samples}");
        let delay = stats.delay(end).expect("thousands of samples");
        assert!(in_range(delay), "{delay:?}");
    }
}
