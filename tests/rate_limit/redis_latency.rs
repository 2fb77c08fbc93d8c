//! The Redis store's bound against a distant Redis: a decision fails only
//! when Redis takes longer than the bound to answer it, not because it
//! queued behind other decisions or waited on its own connection.

use std::time::Duration;

use palisade::rate_limit::{Limits, Quota, RedisStore, Store};
use tokio::time::Instant;

use crate::nz;
use crate::proxy::FaultProxy;
use crate::support::RedisServer;

/// A Redis well within the bound and 64 callers deciding back to back for
/// three seconds: no decision fails (a failure is what the default policy
/// turns into a pass), batching or not. Decisions queued under batching
/// wait for a round trip already out, then take their own: over the bound
/// if it counted the wait; and every write waited for the previous one's
/// ACK, a round trip later, with Nagle's algorithm, which redis-rs leaves
/// on.
///
/// The round trip is 80 ms against a 130 ms bound, rather than the 30 ms
/// against 50 that a demo saw fail: two round trips still exceed the bound,
/// and one leaves room for a busy machine's hiccups. Set
/// `PALISADE_LATENCY_TEST=<ms each way>,<bound ms>,<seconds>` to run it at
/// another scale, such as `15,50,30`.
#[test]
fn a_redis_within_the_bound_fails_no_decision_under_load() {
    let Some(redis) = RedisServer::start_or_skip("a_redis_within_the_bound_fails_no_decision")
    else {
        return;
    };
    let scale = std::env::var("PALISADE_LATENCY_TEST").unwrap_or_else(|_| "40,130,3".into());
    let scale: Vec<u64> = scale.split(',').map(|n| n.parse().unwrap()).collect();
    let [each_way, bound, seconds] = scale[..] else {
        panic!("PALISADE_LATENCY_TEST: <ms each way>,<bound ms>,<seconds>");
    };
    let (each_way, bound) = (
        Duration::from_millis(each_way),
        Duration::from_millis(bound),
    );
    // The proxy runs on a runtime of its own, so the callers' load does not
    // delay Redis's replies beyond the latency it adds.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = proxy_rt.block_on(FaultProxy::start(redis.port()));
    proxy.set_latency(each_way);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limits = Limits::new([Quota::per_second(nz(1_000_000))]);
    for batching in [true, false] {
        let (decided, failures) = rt.block_on(async {
            // Loads both scripts (one decision alone, then batches)
            // straight into Redis: a script's first call is two round trips.
            let warm = RedisStore::connect(&redis.url()).await.unwrap();
            let keys: Vec<String> = (0..64).map(|i| format!("warm{}", i % 4)).collect();
            futures::future::join_all(keys.iter().map(|k| warm.check(k, &limits, 1))).await;

            let s = RedisStore::connect(&proxy.url())
                .await
                .unwrap()
                .timeout(bound)
                .deny_cache(false)
                .batching(batching);
            let until = Instant::now() + Duration::from_secs(seconds);
            let callers: Vec<_> = (0..64)
                .map(|i| {
                    let (s, limits) = (s.clone(), limits.clone());
                    tokio::spawn(async move {
                        let (mut decided, mut failures) = (0u64, Vec::new());
                        while Instant::now() < until {
                            let started = Instant::now();
                            match s.check(&format!("k{}", i % 16), &limits, 1).await {
                                Ok(_) => decided += 1,
                                Err(e) => failures.push(format!("{e} ({:?})", started.elapsed())),
                            }
                        }
                        (decided, failures)
                    })
                })
                .collect();
            let (mut decided, mut failures) = (0, Vec::new());
            for caller in callers {
                let (d, f) = caller.await.unwrap();
                decided += d;
                failures.extend(f);
            }
            (decided, failures)
        });
        eprintln!(
            "batching {batching}, {each_way:?} each way, bound {bound:?}: {decided} decisions, {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "batching {batching}: {} of {} decisions failed: {:?}",
            failures.len(),
            decided + failures.len() as u64,
            &failures[..failures.len().min(5)]
        );
        assert!(decided >= 64, "batching {batching}: {decided} decisions");
    }
    drop(rt);
    drop(proxy);
    drop(proxy_rt);
}
