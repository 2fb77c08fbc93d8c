//! Differential test: palisade's in-memory GCRA against governor's, as an
//! oracle, on random request traces. governor runs on its fake clock and
//! palisade is told the same instants (`MemoryStore::check_at`); for the
//! same quota both must allow exactly the same requests and name the same
//! wait for the ones they deny.
//!
//! `cargo test -p palisade-benches --no-default-features --features rate-limit --test governor_oracle`

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::{Quota as GQuota, RateLimiter};
use palisade::rate_limit::{Limits, MemoryStore, Quota};
use proptest::prelude::*;

type DirectLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<<FakeRelativeClock as Clock>::Instant>,
>;

#[derive(Debug, Clone)]
enum Rate {
    PerSecond(u32),
    PerMinute(u32),
    Interval(u64),
}

fn rate() -> impl Strategy<Value = Rate> {
    prop_oneof![
        (1u32..=1000).prop_map(Rate::PerSecond),
        (1u32..=1000).prop_map(Rate::PerMinute),
        (1u64..=5_000_000_000).prop_map(Rate::Interval),
    ]
}

fn quotas(rate: &Rate, burst: u32) -> (Quota, GQuota) {
    let n = |v: u32| NonZeroU32::new(v).unwrap();
    let (ours, theirs) = match *rate {
        Rate::PerSecond(c) => (Quota::per_second(n(c)), GQuota::per_second(n(c))),
        Rate::PerMinute(c) => (Quota::per_minute(n(c)), GQuota::per_minute(n(c))),
        Rate::Interval(ns) => (
            Quota::with_interval(Duration::from_nanos(ns)).unwrap(),
            GQuota::with_period(Duration::from_nanos(ns)).unwrap(),
        ),
    };
    (ours.burst(n(burst)), theirs.allow_burst(n(burst)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn memory_store_allows_exactly_what_governor_allows(
        rate in rate(),
        burst in 1u32..=50,
        // (advance in ns, key, cost): often no advance (bursts), sometimes
        // up to a few emission intervals.
        trace in prop::collection::vec((prop_oneof![Just(0u64), 0u64..20_000_000_000], 0u8..4, 1u32..=4), 1..300),
    ) {
        let (ours, theirs) = quotas(&rate, burst);
        let interval = ours.interval().as_nanos() as u64;
        let clock = FakeRelativeClock::default();
        let mut governors: HashMap<u8, DirectLimiter> = HashMap::new();
        let store = MemoryStore::new();
        let limits = Limits::new([ours]);
        // Any instant after the store's creation will do: GCRA only sees differences.
        let base = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut elapsed = Duration::ZERO;
        let mut allowed = 0;
        for (i, &(advance, key, cost)) in trace.iter().enumerate() {
            // Scale advances to the quota so traces both drain and refill.
            let step = Duration::from_nanos(((u128::from(advance) * u128::from(interval)) / 1_000_000_000) as u64 / 4);
            clock.advance(step);
            elapsed += step;
            let cost = cost.min(burst);
            let gov = governors
                .entry(key)
                .or_insert_with(|| RateLimiter::direct_with_clock(theirs, clock.clone()));
            let expected = gov.check_n(NonZeroU32::new(cost).unwrap()).unwrap();
            let got = store.check_at(&format!("k{key}"), &limits, cost, base + elapsed);
            prop_assert_eq!(got.is_allowed(), expected.is_ok(), "request {}: {:?}", i, got);
            if let Err(not_until) = expected {
                prop_assert_eq!(got.retry_after(), not_until.wait_time_from(clock.now()), "request {}", i);
            } else {
                allowed += 1;
            }
        }
        prop_assert!(allowed > 0);
    }
}
