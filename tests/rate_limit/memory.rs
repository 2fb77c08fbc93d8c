//! The memory store stays bounded and leaves nothing running.

use std::net::Ipv4Addr;
use std::time::Duration;

use palisade::rate_limit::{Limits, MemoryStore, Quota};

#[tokio::test(start_paused = true)]
async fn a_flood_of_a_million_live_ips_stays_under_max_keys() {
    let store = MemoryStore::with_max_keys(10_000);
    // An hour-long bucket: every key stays live, so only the cap can bound it.
    let limits = Limits::new([Quota::per_hour(10)]);
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        let key = Ipv4Addr::from(i).to_string();
        assert!(store.check_now(&key, &limits, 1).is_allowed());
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
    // The most recent key kept its state.
    let last = Ipv4Addr::from(999_999u32).to_string();
    assert_eq!(store.check_now(&last, &limits, 1).remaining(), 8);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_swept_without_changing_any_decision() {
    let store = MemoryStore::new();
    // Buckets refill in 100 ms: a key idle that long is as good as new.
    let limits = Limits::new([Quota::per_second(10)]);
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
    let limits = Limits::new([Quota::per_second(1)]);
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
