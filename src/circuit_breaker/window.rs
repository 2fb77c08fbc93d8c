//! The sliding windows of the rate modes.

use std::time::Duration;

use tokio::time::Instant;

const FAILURE: u8 = 1;
const SLOW: u8 = 2;

/// The counts of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Counts {
    pub(crate) fn failure_rate(self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.failures) / f64::from(self.calls))
    }

    pub(crate) fn slow_rate(self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.slow) / f64::from(self.calls))
    }
}

/// Exactly the last `size` recorded calls, in a ring.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    // The slot the next call overwrites.
    head: usize,
    counts: Counts,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            ring: vec![0; size as usize].into_boxed_slice(),
            head: 0,
            counts: Counts::default(),
        }
    }

    /// Records one call and returns the counts after it.
    #[inline]
    pub(crate) fn record(&mut self, failure: bool, slow: bool) -> Counts {
        // Field by field, with branches the common case predicts: copying
        // the counts as a struct (or letting the compiler pack them into a
        // vector register) reloads them right after a narrower store, which
        // stalls the store buffer for longer than the rest of the ring takes.
        let counts = &mut self.counts;
        if counts.calls as usize == self.ring.len() {
            let old = self.ring[self.head];
            if old & FAILURE != 0 {
                counts.failures -= 1;
            }
            if old & SLOW != 0 {
                counts.slow -= 1;
            }
        } else {
            counts.calls += 1;
        }
        let mut new = 0;
        if failure {
            counts.failures += 1;
            new |= FAILURE;
        }
        if slow {
            counts.slow += 1;
            new |= SLOW;
        }
        self.ring[self.head] = new;
        // No `%`: a division per call costs more than the rest of the ring.
        self.head += 1;
        if self.head == self.ring.len() {
            self.head = 0;
        }
        Counts {
            calls: counts.calls,
            failures: counts.failures,
            slow: counts.slow,
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.counts = Counts::default();
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    // Which bucket-length interval since the origin this bucket holds.
    epoch: u64,
    counts: Counts,
}

/// The calls of the last `length`, in buckets of `length / buckets`.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    origin: Instant,
}

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: u32, origin: Instant) -> Self {
        let nanos = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        Self {
            buckets: vec![
                Bucket {
                    epoch: u64::MAX,
                    counts: Counts::default()
                };
                buckets as usize
            ]
            .into_boxed_slice(),
            bucket_nanos: (nanos / u64::from(buckets)).max(1),
            origin,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        // A u64 division: a u128 one costs tens of nanoseconds per call.
        let since = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1);
        since / self.bucket_nanos
    }

    /// Records one call and returns the window's counts after it.
    pub(crate) fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Counts {
        let epoch = self.epoch(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(epoch % len) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                counts: Counts::default(),
            };
        }
        bucket.counts.calls += 1;
        bucket.counts.failures += u32::from(failure);
        bucket.counts.slow += u32::from(slow);
        self.counts_at(epoch)
    }

    pub(crate) fn counts(&self, now: Instant) -> Counts {
        self.counts_at(self.epoch(now))
    }

    fn counts_at(&self, epoch: u64) -> Counts {
        let len = self.buckets.len() as u64;
        let mut total = Counts::default();
        for bucket in self.buckets.iter() {
            // Buckets from the current interval and the `len - 1` before it.
            if bucket.epoch <= epoch && epoch - bucket.epoch < len {
                total.calls += bucket.counts.calls;
                total.failures += bucket.counts.failures;
                total.slow += bucket.counts.slow;
            }
        }
        total
    }

    pub(crate) fn clear(&mut self) {
        for bucket in self.buckets.iter_mut() {
            bucket.epoch = u64::MAX;
            bucket.counts = Counts::default();
        }
    }
}

/// The window of a rate mode.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Records one call and returns the counts after it.
    #[inline]
    pub(crate) fn record(&mut self, now: Option<Instant>, failure: bool, slow: bool) -> Counts {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(now.unwrap_or_else(Instant::now), failure, slow),
        }
    }

    pub(crate) fn counts(&self, now: Option<Instant>) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now.unwrap_or_else(Instant::now)),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}
