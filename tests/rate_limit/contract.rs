//! The store contract, generic over `Store`, run against every store.

use std::time::Duration;

use crate::nz;
use palisade::rate_limit::{Limits, MemoryStore, Quota, Store};

/// Burst, denial, cost > 1, several quotas, and "a denial spends nothing".
/// Quotas are slow enough (minutes) that real time does not refill them
/// while the contract runs.
pub(crate) async fn contract<S: Store>(store: S, scope: &str) {
    let limits = Limits::new([Quota::per_minute(nz(6)).burst(nz(3))]).namespaced(scope);
    for remaining in (0..3).rev() {
        let d = store.check("a", &limits, 1).await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.remaining(), remaining);
    }
    let denied = store.check("a", &limits, 1).await.unwrap();
    assert!(!denied.is_allowed());
    assert!(denied.retry_after() > Duration::from_secs(9));
    assert!(denied.retry_after() <= Duration::from_secs(10));
    assert!(
        store.check("b", &limits, 1).await.unwrap().is_allowed(),
        "keys are apart"
    );

    // Cost: 3 fits a fresh bucket of 3 once.
    assert!(store.check("c", &limits, 3).await.unwrap().is_allowed());
    assert!(!store.check("c", &limits, 1).await.unwrap().is_allowed());

    // Several quotas: all must allow, and a denial by one spends nothing.
    let multi = Limits::new([
        Quota::per_minute(nz(60)).burst(nz(5)),
        Quota::per_hour(nz(3)).named("hour"),
    ])
    .namespaced(scope);
    for _ in 0..3 {
        assert!(store.check("m", &multi, 1).await.unwrap().is_allowed());
    }
    let d = store.check("m", &multi, 1).await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(multi.name(d.quota()), "hour");
    let d = store.check("m2", &multi, 2).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 1, "the hour quota binds: 3 - 2");
    let d = store.check("m2", &multi, 2).await.unwrap();
    assert!(!d.is_allowed(), "hour quota has 1 left, cost 2");
    let d = store.check("m2", &multi, 1).await.unwrap();
    assert!(d.is_allowed(), "the denied cost-2 request spent nothing");
    assert_eq!(d.remaining(), 0);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(MemoryStore::new(), "").await;
}
