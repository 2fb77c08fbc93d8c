//! The in-memory GCRA against a plain model: one token bucket per quota
//! that holds `burst * interval` nanoseconds of credit and refills with
//! time, driven on paused tokio time.

use std::collections::HashMap;
use std::time::Duration;

use crate::nz;
use palisade::rate_limit::{Limits, MemoryStore, Quota, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Bucket {
    credit: u64,
    last: u64,
}

/// The model: credit in nanoseconds, capped at `interval * burst`; a
/// request of cost `c` needs `c * interval` credit in every quota.
struct Model {
    quotas: Vec<(u64, u64)>, // (interval, capacity)
    buckets: HashMap<(u8, usize), Bucket>,
}

struct Outcome {
    allowed: bool,
    retry_after: u64,
    remaining: u64,
}

impl Model {
    fn hit(&mut self, key: u8, cost: u32, now: u64) -> Outcome {
        let cost = u64::from(cost);
        let mut levels = Vec::new();
        for (i, &(interval, cap)) in self.quotas.iter().enumerate() {
            let b = self.buckets.entry((key, i)).or_insert(Bucket {
                credit: cap,
                last: now,
            });
            b.credit = (b.credit + (now - b.last)).min(cap);
            b.last = now;
            levels.push((b.credit, interval));
        }
        let shortfall = levels
            .iter()
            .map(|&(credit, interval)| (cost * interval).saturating_sub(credit))
            .max()
            .unwrap();
        if shortfall > 0 {
            // The quota that needs the longest wait reports its remaining cells.
            let (i, _) = levels
                .iter()
                .enumerate()
                .map(|(i, &(credit, interval))| (i, (cost * interval).saturating_sub(credit)))
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .unwrap();
            return Outcome {
                allowed: false,
                retry_after: shortfall,
                remaining: levels[i].0 / levels[i].1,
            };
        }
        let mut remaining = u64::MAX;
        for (i, &(interval, _)) in self.quotas.iter().enumerate() {
            let b = self.buckets.get_mut(&(key, i)).unwrap();
            b.credit -= cost * interval;
            remaining = remaining.min(b.credit / interval);
        }
        Outcome {
            allowed: true,
            retry_after: 0,
            remaining,
        }
    }
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u64..=50, 1u32..=6).prop_map(|(ms, burst)| {
        Quota::with_interval(Duration::from_millis(ms))
            .unwrap()
            .burst(nz(burst))
    })
}

fn step() -> impl Strategy<Value = (u64, u8, u32)> {
    // Advance 0..60 ms (often 0: bursts), one of 3 keys, cost 1..=3.
    (prop_oneof![Just(0u64), 0u64..60_000_000], 0u8..3, 1u32..=3)
}

fn run(quotas: Vec<Quota>, steps: Vec<(u64, u8, u32)>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryStore::new();
        let limits = Limits::new(quotas.clone());
        let mut model = Model {
            quotas: quotas
                .iter()
                .map(|q| {
                    let i = q.interval().as_nanos() as u64;
                    (i, i * u64::from(q.max_burst().get()))
                })
                .collect(),
            buckets: HashMap::new(),
        };
        let start = tokio::time::Instant::now();
        for (i, &(advance, key, cost)) in steps.iter().enumerate() {
            tokio::time::advance(Duration::from_nanos(advance)).await;
            let now = (tokio::time::Instant::now() - start).as_nanos() as u64;
            let cost = cost.min(limits.max_cost());
            let d = store
                .check(&format!("k{key}"), &limits, cost)
                .await
                .unwrap();
            let m = model.hit(key, cost, now);
            prop_assert_eq!(d.is_allowed(), m.allowed, "step {}: allowed", i);
            prop_assert_eq!(
                d.retry_after().as_nanos() as u64,
                m.retry_after,
                "step {}: retry",
                i
            );
            prop_assert_eq!(d.remaining(), m.remaining, "step {}: remaining", i);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn memory_gcra_matches_the_token_bucket_model(
        quotas in prop::collection::vec(quota(), 1..=3),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        run(quotas, steps)?;
    }

    // One quota: the first key takes the store's lock-free slot (an atomic
    // updated by compare-and-swap) and the others go to the shards, so both
    // paths are held to the model side by side.
    #[test]
    fn lock_free_slot_and_shards_match_the_token_bucket_model(
        quota in quota(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        run(vec![quota], steps)?;
    }
}
