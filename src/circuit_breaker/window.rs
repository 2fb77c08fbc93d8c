//! The sliding windows of the rate modes.

use std::time::Duration;

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
    // Which bucket-length interval since the clock's origin this bucket holds.
    epoch: u64,
    counts: Counts,
}

const EMPTY: Bucket = Bucket {
    epoch: u64::MAX,
    counts: Counts {
        calls: 0,
        failures: 0,
        slow: 0,
    },
};

/// The calls of the last `length`, in buckets of `length / buckets`.
///
/// The window keeps the sum of its live buckets, so a call within the
/// current bucket costs two comparisons and three additions: no division,
/// no pass over the buckets. Moving to a new bucket (once per bucket length
/// at most) recounts them.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    // The current bucket: its index, and its interval [start, end) in
    // nanoseconds since the clock's origin.
    current: usize,
    start: u64,
    end: u64,
    // The counts of the live buckets (the current one and the `len - 1`
    // before it).
    total: Counts,
}

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        let nanos = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        let bucket_nanos = (nanos / u64::from(buckets)).max(1);
        let mut window = Self {
            buckets: vec![EMPTY; buckets as usize].into_boxed_slice(),
            bucket_nanos,
            current: 0,
            start: 0,
            end: 0,
            total: Counts::default(),
        };
        window.clear();
        window
    }

    /// Records one call finished at `now` (nanoseconds since the clock's
    /// origin) and returns the window's counts after it, and whether older
    /// calls left the window with it.
    #[inline]
    pub(crate) fn record(&mut self, now: u64, failure: bool, slow: bool) -> (Counts, bool) {
        // A call read the clock before another that recorded first lands in
        // the current bucket: clocks of two threads may disagree by a little.
        let advanced = now >= self.end;
        if advanced {
            self.advance(now);
        }
        let bucket = &mut self.buckets[self.current].counts;
        bucket.calls += 1;
        self.total.calls += 1;
        if failure {
            bucket.failures += 1;
            self.total.failures += 1;
        }
        if slow {
            bucket.slow += 1;
            self.total.slow += 1;
        }
        (self.total, advanced)
    }

    /// Makes the bucket of `now` current and recounts the live buckets.
    #[cold]
    fn advance(&mut self, now: u64) {
        let epoch = now / self.bucket_nanos;
        let len = self.buckets.len() as u64;
        self.current = (epoch % len) as usize;
        self.start = epoch * self.bucket_nanos;
        self.end = self.start.saturating_add(self.bucket_nanos);
        let bucket = &mut self.buckets[self.current];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                counts: Counts::default(),
            };
        }
        self.total = self.counts_at(epoch);
    }

    /// The counts of the window as of `now`, without recording.
    pub(crate) fn counts(&self, now: u64) -> Counts {
        self.counts_at((now / self.bucket_nanos).max(self.start / self.bucket_nanos))
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
        self.buckets.fill(EMPTY);
        self.total = Counts::default();
        // The next call makes its bucket current.
        self.current = 0;
        self.start = 0;
        self.end = 0;
    }
}

/// The window of a rate mode.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Records one call and returns the counts after it, and whether calls
    /// older than it left the window on a clock tick (a time window moving
    /// on; a count window's ring only replaces the oldest call).
    /// `now` is read from the breaker's clock, for a time window only.
    #[inline]
    pub(crate) fn record(
        &mut self,
        now: impl FnOnce() -> u64,
        failure: bool,
        slow: bool,
    ) -> (Counts, bool) {
        match self {
            Window::Count(w) => (w.record(failure, slow), false),
            Window::Time(w) => w.record(now(), failure, slow),
        }
    }

    pub(crate) fn counts(&self, now: impl FnOnce() -> u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now()),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}
