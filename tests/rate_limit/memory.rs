//! The memory store stays bounded and leaves nothing running.

use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::{nz, nzu};
use palisade::rate_limit::{Limits, MemoryStore, Quota};

#[tokio::test(start_paused = true)]
async fn a_flood_of_a_million_live_ips_stays_under_max_keys() {
    let store = MemoryStore::with_max_keys(nzu(10_000));
    // An hour-long bucket: every key stays live, so only the cap can bound it.
    let limits = Limits::new([Quota::per_hour(nz(10))]);
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        let key = Ipv4Addr::from(i).to_string();
        store.check_now(&key, &limits, 1);
        if i % 10_000 == 0 {
            peak = peak.max(store.len());
        }
    }
    peak = peak.max(store.len());
    assert!(
        peak <= store.max_keys(),
        "peak {peak} > {}",
        store.max_keys()
    );
    assert!(
        peak >= store.max_keys() / 2,
        "the cap is used, not a tiny table: {peak}"
    );
    // An early key kept its state (key 0 took the lock-free slot).
    let early = Ipv4Addr::from(1u32).to_string();
    assert_eq!(store.check_now(&early, &limits, 1).remaining(), 8);
}

/// Unique keys flooding a full store reset no bucket: each flooded key is
/// allowed once at most within the hour, and a victim that spent its quota
/// before the flood stays limited through it.
#[tokio::test(start_paused = true)]
async fn a_flood_of_unique_keys_gives_no_key_a_second_burst() {
    const FLOOD: u32 = 40_000;
    let store = MemoryStore::with_max_keys(nzu(10_000));
    let limits = Limits::new([Quota::per_hour(nz(1))]);
    // The first key takes the lock-free slot, so the victim is in the shards.
    assert!(store.check_now("slot", &limits, 1).is_allowed());
    assert!(store.check_now("victim", &limits, 1).is_allowed());
    let keys: Vec<String> = (0..FLOOD).map(|i| format!("flood-{i}")).collect();
    let mut once = 0;
    for (i, key) in keys.iter().enumerate() {
        once += usize::from(store.check_now(key, &limits, 1).is_allowed());
        if i % 1_000 == 0 {
            assert!(
                !store.check_now("victim", &limits, 1).is_allowed(),
                "victim allowed again after {i} flooded keys"
            );
        }
        if i % 100 == 0 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }
    let twice = keys
        .iter()
        .filter(|key| store.check_now(key, &limits, 1).is_allowed())
        .count();
    assert_eq!(
        twice, 0,
        "flooded keys allowed a second time within the hour"
    );
    assert!(!store.check_now("victim", &limits, 1).is_allowed());
    assert!(store.len() <= store.max_keys(), "{}", store.len());
    assert!(once >= store.max_keys() / 2, "the cap is used: {once}");
}

/// Once the buckets of a full store are full again, new keys get buckets of
/// their own again: the overflow is for a store full of live keys only.
#[tokio::test(start_paused = true)]
async fn a_full_store_takes_new_keys_again_once_buckets_refill() {
    let store = MemoryStore::with_max_keys(nzu(1_000));
    let limits = Limits::new([Quota::per_minute(nz(1))]);
    for i in 0..5_000 {
        store.check_now(&format!("a{i}"), &limits, 1);
    }
    let d = store.check_now("new", &limits, 1);
    assert!(d.is_overflowed() && !d.is_allowed(), "{d:?}");
    tokio::time::advance(Duration::from_secs(60)).await;
    // 200 keys over 64 shards of 16: none is full again.
    for i in 0..200 {
        let d = store.check_now(&format!("b{i}"), &limits, 1);
        assert!(d.is_allowed() && !d.is_overflowed(), "key b{i}: {d:?}");
        assert!(!store.check_now(&format!("b{i}"), &limits, 1).is_allowed());
    }
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_swept_without_changing_any_decision() {
    let store = MemoryStore::new();
    // Buckets refill in 100 ms: a key idle that long is as good as new.
    let limits = Limits::new([Quota::per_second(nz(10))]);
    let mut peak = 0;
    for i in 0..200_000u32 {
        if i % 100 == 0 {
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let d = store.check_now(&Ipv4Addr::from(i % 50_000).to_string(), &limits, 1);
        assert!(d.is_allowed(), "request {i}");
        assert_eq!(
            d.remaining(),
            9,
            "every key is seen again only after it refilled"
        );
        peak = peak.max(store.len());
    }
    // About 1,000 keys are live at a time (100 ms of 10 keys/ms); sweeping
    // keeps the table within a small factor of that, far under the cap.
    assert!(peak <= 8_192, "peak {peak}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_store_leaves_no_task_running() {
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let store = MemoryStore::new();
    let limits = Limits::new([Quota::per_second(nz(1))]);
    for i in 0..10_000 {
        store.check_now(&i.to_string(), &limits, 1);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        before
    );
    drop(store);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        before
    );
}

/// Threads race for the lock-free slot (one key wins it, the rest go to the
/// shards) and hammer one shared key: every key lets exactly its burst
/// through, so no key's state is ever split between the slot and a shard.
#[test]
fn the_lock_free_slot_and_the_shards_are_exact_under_contention() {
    const THREADS: usize = 8;
    const BURST: u32 = 50;
    for _ in 0..20 {
        let store = MemoryStore::new();
        // An hour-long refill: real time cannot add a cell during the test.
        let limits = Limits::new([Quota::per_hour(nz(BURST))]);
        let barrier = Arc::new(Barrier::new(THREADS));
        let allowed: Vec<(u32, u32)> = (0..THREADS)
            .map(|t| {
                let (store, limits, barrier) = (store.clone(), limits.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let (mut own, mut shared) = (0, 0);
                    for _ in 0..2 * BURST {
                        own +=
                            u32::from(store.check_now(&format!("own{t}"), &limits, 1).is_allowed());
                        shared += u32::from(store.check_now("shared", &limits, 1).is_allowed());
                    }
                    (own, shared)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for (t, &(own, _)) in allowed.iter().enumerate() {
            assert_eq!(own, BURST, "thread {t}'s own key");
        }
        assert_eq!(
            allowed.iter().map(|&(_, s)| s).sum::<u32>(),
            BURST,
            "the shared key"
        );
        // One key sits in the slot, the other nine in the shards.
        assert_eq!(store.len(), THREADS);
    }
}

#[test]
fn several_quotas_on_the_slot_key_are_counted_apart_and_all_or_nothing() {
    let store = MemoryStore::new();
    let one = Limits::new([Quota::per_hour(nz(2))]);
    let two = Limits::new([Quota::per_hour(nz(5)), Quota::per_hour(nz(3))]);
    // "k" under one quota takes the slot; under two quotas it is another
    // counter, in the shards.
    assert!(store.check_now("k", &one, 2).is_allowed());
    assert!(!store.check_now("k", &one, 1).is_allowed());
    assert!(store.check_now("k", &two, 2).is_allowed());
    assert!(
        !store.check_now("k", &two, 2).is_allowed(),
        "the 3/h quota has 1 left"
    );
    let d = store.check_now("k", &two, 1);
    assert!(d.is_allowed(), "the denial spent nothing");
    assert_eq!(d.remaining(), 0);
    assert_eq!(store.len(), 1);
}

#[cfg(feature = "fast-clock")]
#[test]
fn the_fast_clock_store_decides_like_the_default_one() {
    let store = MemoryStore::with_max_keys(nzu(1_000)).fast_clock(true);
    let limits = Limits::new([Quota::per_hour(nz(3))]);
    for key in ["slot", "shard"] {
        for remaining in (0..3).rev() {
            assert_eq!(store.check_now(key, &limits, 1).remaining(), remaining);
        }
        let d = store.check_now(key, &limits, 1);
        assert!(!d.is_allowed());
        assert!(d.retry_after() > Duration::from_secs(1199));
        assert!(d.retry_after() <= Duration::from_secs(1200));
    }
}

/// Each set of limits has its own overflow bucket: a limiter whose new keys
/// spent theirs does not spend another's.
#[tokio::test(start_paused = true)]
async fn each_limiter_overflows_into_its_own_bucket() {
    let store = MemoryStore::with_max_keys(nzu(64));
    let a = Limits::new([Quota::per_hour(nz(1))]);
    let b = Limits::new([Quota::per_hour(nz(2))]).namespaced("b");
    // Enough keys that every shard is full (an empty one is a 1e-30 chance).
    for i in 0..5_000 {
        store.check_now(&format!("a{i}"), &a, 1);
    }
    let d = store.check_now("new-a", &a, 1);
    assert!(d.is_overflowed() && !d.is_allowed(), "{d:?}");
    for remaining in [1, 0] {
        let d = store.check_now(&format!("new-b{remaining}"), &b, 1);
        assert!(d.is_overflowed() && d.is_allowed(), "{d:?}");
        assert_eq!(d.remaining(), remaining);
    }
    assert!(!store.check_now("new-b", &b, 1).is_allowed());
    assert!(!store.check_now("new-a2", &a, 1).is_allowed());
}

/// Decisions on the overflow bucket are counted by the layer's name.
#[cfg(feature = "metrics")]
#[test]
fn overflow_decisions_are_counted() {
    use palisade::rate_limit::RateLimitLayer;
    use tower::{Layer, ServiceExt, service_fn};

    const KEYS: u32 = 200;
    // One key per shard: most of the 200 keys find their shard full.
    let store = MemoryStore::with_max_keys(nzu(64));
    let (allowed, counts) = crate::recording::record_metrics("palisade_rate_limit_", || async {
        let svc = RateLimitLayer::with_store(store.clone(), Quota::per_hour(nz(1)))
            .per(|user: &String| Some(user.clone()))
            .name("full")
            .layer(service_fn(|_: String| async {
                Ok::<_, std::convert::Infallible>(())
            }));
        let mut allowed = 0;
        for i in 0..KEYS {
            allowed += u32::from(svc.clone().oneshot(format!("u{i}")).await.is_ok());
        }
        allowed
    });
    // The first key took the lock-free slot, the shards hold one each, and
    // the rest shared one overflow bucket, which allowed one of them.
    let held = u32::try_from(store.len()).unwrap();
    assert!(held <= 64, "{held}");
    assert_eq!(allowed, 1 + held + 1);
    let count = |metric: &str| counts.get(metric).copied().unwrap_or_default();
    assert_eq!(
        count("palisade_rate_limit_overflow_decisions_total{name=\"full\"}"),
        f64::from(KEYS - 1 - held),
        "{counts:?}"
    );
    assert_eq!(
        count("palisade_rate_limit_decisions_total{name=\"full\",outcome=\"denied\"}"),
        f64::from(KEYS - allowed)
    );
}

/// A quota of centuries per cell beside an ordinary one: the decision that
/// allows saturates instead of overflowing (a panic in debug builds, a
/// wrapped state that lets requests through in release builds).
#[test]
fn a_huge_quota_beside_another_neither_panics_nor_lets_a_flood_through() {
    let huge = Quota::per_period(Duration::MAX, nz(1)).unwrap();
    let limits = Limits::new([huge, Quota::per_second(nz(10))]);
    let store = MemoryStore::new();
    let now = tokio::time::Instant::now() + Duration::from_secs(1);
    assert!(store.check_at("k", &limits, 1, now).is_allowed());
    for _ in 0..3 {
        assert!(!store.check_at("k", &limits, 1, now).is_allowed());
    }
}

/// `RateLimit-Policy`'s window of a quota of centuries is written, not
/// overflowed.
#[test]
fn a_huge_window_is_written_in_the_policy_header() {
    let huge = Quota::per_period(Duration::MAX, nz(1))
        .unwrap()
        .burst(std::num::NonZeroU32::MAX);
    let limits = Limits::new([huge]);
    assert!(limits.policy_field().contains(";w="));
}
