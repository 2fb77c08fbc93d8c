//! Quotas chosen per request (tiers) and replaced at run time through the
//! handle, on the memory store (paused time) and on Redis.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use palisade::key::Header;
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{
    Handle, InvalidTier, MemoryStore, Quota, RateLimitLayer, Store, TierExtractor,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use crate::nz;

/// The plan the authentication layer put in the request.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Free,
    Pro,
    /// A plan the limiter has no tier for.
    Trial,
}

fn plan<B>(req: &Request<B>) -> Option<&str> {
    Some(match req.extensions().get::<Plan>()? {
        Plan::Free => "free",
        Plan::Pro => "pro",
        Plan::Trial => "trial",
    })
}

fn request(caller: &str, plan: Option<Plan>) -> Request<()> {
    let mut req = Request::builder()
        .header("x-api-key", caller)
        .body(())
        .unwrap();
    if let Some(plan) = plan {
        req.extensions_mut().insert(plan);
    }
    req
}

/// A stack over HTTP: 429 problems, RateLimit headers on every answer.
fn stack<St: Store, T>(
    layer: RateLimitLayer<
        St,
        palisade::key::Header,
        palisade::rate_limit::UnitCost,
        palisade::rate_limit::NoHeaders,
        T,
    >,
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible, Future: Send> + Clone
where
    T: TierExtractor<Request<()>>,
{
    ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer.http_headers())
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Bytes::new()))
        }))
}

/// How many requests in a row pass, up to `max`.
async fn allowed<S>(svc: &S, caller: &str, plan: Option<Plan>, max: usize) -> usize
where
    S: Service<Request<()>, Response = Response<Bytes>, Error = Infallible> + Clone,
{
    for n in 0..max {
        let response = svc.clone().oneshot(request(caller, plan)).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return n;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    max
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(nz(n))
}

fn layer(store: MemoryStore) -> RateLimitLayer<MemoryStore, Header> {
    RateLimitLayer::with_store(store, per_minute(3)).per(Header::api_key())
}

#[tokio::test(start_paused = true)]
async fn each_request_gets_its_tiers_quota_and_the_policy_header_shows_it() {
    let layer = layer(MemoryStore::new())
        .tier("pro", [per_minute(10)])
        .tier_of(plan::<()>);
    let svc = stack(layer);

    assert_eq!(allowed(&svc, "ann", Some(Plan::Free), 20).await, 3);
    assert_eq!(allowed(&svc, "bob", Some(Plan::Pro), 20).await, 10);
    // No plan, or one without a tier: the default tier.
    assert_eq!(allowed(&svc, "cy", None, 20).await, 3);
    assert_eq!(allowed(&svc, "dee", Some(Plan::Trial), 20).await, 3);

    let pro = svc
        .clone()
        .oneshot(request("eve", Some(Plan::Pro)))
        .await
        .unwrap();
    assert_eq!(pro.headers()["ratelimit-policy"], "\"pro\";q=10;w=60");
    let free = svc
        .clone()
        .oneshot(request("fay", Some(Plan::Free)))
        .await
        .unwrap();
    assert_eq!(free.headers()["ratelimit-policy"], "\"default\";q=3;w=60");
    // A refusal names the tier whose quota refused.
    let refused = svc
        .clone()
        .oneshot(request("bob", Some(Plan::Pro)))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["ratelimit-policy"], "\"pro\";q=10;w=60");
}

#[tokio::test(start_paused = true)]
async fn tiers_count_apart_for_one_caller() {
    // A caller who moves to another plan starts on that tier's bucket.
    let svc = stack(
        layer(MemoryStore::new())
            .tier("pro", [per_minute(5)])
            .tier_of(plan::<()>),
    );
    assert_eq!(allowed(&svc, "ann", Some(Plan::Free), 20).await, 3);
    assert_eq!(allowed(&svc, "ann", Some(Plan::Pro), 20).await, 5);
}

/// 10 a minute: one cell every 6 s, a window of 60 s. Spending 5 leaves
/// the bucket full again in 30 s; under 20 a minute (a cell every 3 s, the
/// same window) those 30 s are 10 cells: 10 left, not the 20 of a fresh
/// bucket, nor 15 (the cells spent carried over).
#[tokio::test(start_paused = true)]
async fn a_quota_replaced_mid_traffic_applies_to_the_next_request_and_keeps_each_bucket() {
    let layer = RateLimitLayer::new(per_minute(10)).per(Header::api_key());
    let handle = layer.handle();
    let svc = stack(layer);

    assert_eq!(allowed(&svc, "ann", None, 5).await, 5);
    handle.set_quotas([per_minute(20)]).unwrap();
    assert_eq!(allowed(&svc, "ann", None, 30).await, 10);
    // A caller never seen gets the new quota whole.
    assert_eq!(allowed(&svc, "bob", None, 30).await, 20);

    // Shrinking: "ann" is full (60 s ahead); under 4 a minute (one cell
    // every 15 s, a 60 s window) she waits for one cell, then one more
    // every 15 s.
    handle.set_quotas([per_minute(4)]).unwrap();
    assert_eq!(allowed(&svc, "ann", None, 5).await, 0);
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(allowed(&svc, "ann", None, 5).await, 1);
    // A bucket half spent under 20 a minute is half spent under 4.
    tokio::time::advance(Duration::from_secs(3600)).await;
    handle.set_quotas([per_minute(20)]).unwrap();
    assert_eq!(allowed(&svc, "cy", None, 10).await, 10);
    handle.set_quotas([per_minute(4)]).unwrap();
    assert_eq!(allowed(&svc, "cy", None, 10).await, 2);
}

/// A spent bucket stays spent (its share is kept), but its next cell
/// comes at the new quota's pace: 0.6 s under 100 a minute, not the 30 s
/// of 2 a minute.
#[tokio::test(start_paused = true)]
async fn a_denied_caller_gets_its_next_cell_at_the_new_quotas_pace() {
    let layer = RateLimitLayer::new(per_minute(2)).per(Header::api_key());
    let handle = layer.handle();
    let svc = stack(layer);
    assert_eq!(allowed(&svc, "ann", None, 5).await, 2);
    handle.set_quotas([per_minute(100)]).unwrap();
    let refused = svc.clone().oneshot(request("ann", None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        "\"default\";q=100;w=60"
    );
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(allowed(&svc, "ann", None, 5).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_tier_replaced_at_run_time_and_a_tier_added_and_removed() {
    let layer = layer(MemoryStore::new())
        .tier("pro", [per_minute(5)])
        .tier_of(plan::<()>);
    let handle = layer.handle();
    let svc = stack(layer);

    // Taken after the services were built: it still steers them.
    handle.set_tier("pro", [per_minute(8)]).unwrap();
    assert_eq!(allowed(&svc, "ann", Some(Plan::Pro), 20).await, 8);
    assert_eq!(
        handle.tier("pro").unwrap().policy_field(),
        "\"pro\";q=8;w=60"
    );

    handle.set_tier("trial", [per_minute(1)]).unwrap();
    assert_eq!(allowed(&svc, "bob", Some(Plan::Trial), 20).await, 1);
    assert_eq!(handle.tier_names(), ["pro", "trial"]);
    assert!(handle.remove_tier("trial"));
    assert!(!handle.remove_tier("trial"));
    // Its callers are in the default tier now.
    assert_eq!(allowed(&svc, "cy", Some(Plan::Trial), 20).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_bad_tier_is_refused_and_changes_nothing() {
    let layer = layer(MemoryStore::new()).tier("pro", [per_minute(5)]);
    let handle: Handle = layer.handle();
    let before = format!("{:?}", handle.tier("pro"));
    assert_eq!(handle.set_tier("pro", []), Err(InvalidTier::NoQuota));
    assert_eq!(handle.set_quotas([]), Err(InvalidTier::NoQuota));
    for name in ["", "caf\u{e9}", "a\nb", &"x".repeat(65)] {
        let err = handle.set_tier(name, [per_minute(1)]).unwrap_err();
        assert_eq!(err, InvalidTier::Name(name.to_owned()));
        assert!(err.to_string().contains("printable ASCII"), "{err}");
    }
    assert_eq!(format!("{:?}", handle.tier("pro")), before);
    assert_eq!(handle.tier_names(), ["pro"]);
    assert_eq!(handle.limits().policy_field(), "\"default\";q=3;w=60");
}

#[tokio::test(start_paused = true)]
async fn a_replacement_with_other_quotas_starts_fresh_buckets() {
    let layer = RateLimitLayer::new(per_minute(4)).per(Header::api_key());
    let handle = layer.handle();
    let svc = stack(layer);
    assert_eq!(allowed(&svc, "ann", None, 10).await, 4);
    // Two quotas instead of one: nothing to carry over.
    handle
        .set_quotas([per_minute(6), Quota::per_hour(nz(100)).named("hourly")])
        .unwrap();
    assert_eq!(allowed(&svc, "ann", None, 10).await, 6);
}

/// Keys that find a full memory store share its overflow bucket; a
/// replacement that keeps every key's bucket keeps that one too, or each
/// key of a flood would get a fresh burst the moment a quota is changed.
#[tokio::test(start_paused = true)]
async fn a_replacement_keeps_the_overflow_bucket_of_a_full_memory_store() {
    let store = MemoryStore::with_max_keys(crate::nzu(64));
    let layer = RateLimitLayer::with_store(store.clone(), Quota::per_hour(nz(1)));
    let handle = layer.handle();
    let before = handle.limits();
    // Enough keys that every shard is full (an empty one is a 1e-30 chance).
    for i in 0..5_000 {
        store.check_now(&format!("k{i}"), &before, 1);
    }
    let d = store.check_now("flood", &before, 1);
    assert!(d.is_overflowed() && !d.is_allowed(), "{d:?}");

    // Same name, same window: the spent overflow bucket stays spent.
    handle.set_quotas([Quota::per_hour(nz(2))]).unwrap();
    let after = handle.limits();
    assert!(!store.check_now("k1", &after, 1).is_allowed());
    let d = store.check_now("flood-2", &after, 1);
    assert!(d.is_overflowed(), "{d:?}");
    assert!(
        !d.is_allowed(),
        "a fresh overflow bucket after the replacement"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_the_layer_share_their_quotas() {
    let layer = RateLimitLayer::new(per_minute(2)).per(Header::api_key());
    let handle = layer.handle();
    let clone = layer
        .clone()
        .quota(Quota::per_second(nz(1)).named("second"));
    // The setter on the clone changed the quotas the original's handle reads.
    assert_eq!(handle.limits().quotas().len(), 2);
    assert_eq!(layer.limits().quotas().len(), 2);
    let _ = clone;
}

#[cfg(feature = "redis")]
mod redis {
    use palisade::rate_limit::RedisStore;

    use super::*;
    use crate::support::RedisServer;

    /// Per hour, so the real clock adds no cell while the test runs.
    fn per_hour(n: u32) -> Quota {
        Quota::per_hour(nz(n))
    }

    async fn store(redis: &RedisServer) -> RedisStore {
        RedisStore::connect(&redis.url())
            .await
            .unwrap()
            .timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn on_redis_a_replaced_quota_keeps_each_bucket() {
        let Some(redis) = RedisServer::start_or_skip("tiers_on_redis") else {
            return;
        };
        let layer =
            RateLimitLayer::with_store(store(&redis).await, per_hour(10)).per(Header::api_key());
        let handle = layer.handle();
        let svc = stack(layer);

        assert_eq!(allowed(&svc, "ann", None, 5).await, 5);
        handle.set_quotas([per_hour(20)]).unwrap();
        assert_eq!(allowed(&svc, "ann", None, 30).await, 10);
    }

    /// A tier's quotas are named after it, and a named quota's buckets are
    /// found by its name: an instance reloaded to pro = 20 an hour and one
    /// started with it share one bucket, so the fleet never grants twice.
    #[tokio::test]
    async fn an_instance_reloaded_and_one_started_with_the_new_quota_share_buckets() {
        let Some(redis) = RedisServer::start_or_skip("tiers_reloaded_and_started") else {
            return;
        };
        let pro = |n| {
            let store = store(&redis);
            async move {
                RateLimitLayer::with_store(store.await, per_hour(10))
                    .per(Header::api_key())
                    .tier("pro", [per_hour(n)])
                    .tier_of(plan::<()>)
            }
        };
        let reloaded = pro(10).await;
        reloaded.handle().set_tier("pro", [per_hour(20)]).unwrap();
        let started = pro(20).await;
        let (reloaded, started) = (stack(reloaded), stack(started));
        assert_eq!(allowed(&reloaded, "ann", Some(Plan::Pro), 12).await, 12);
        assert_eq!(allowed(&started, "ann", Some(Plan::Pro), 20).await, 8);
    }

    /// A denial is remembered in this process (the deny cache) for its
    /// retry-after, 10 s here; under the new quota the next cell is 10 ms
    /// away, and the remembered denial must not hide it.
    #[tokio::test]
    async fn on_redis_a_replaced_quota_ends_a_denial_remembered_in_process() {
        let Some(redis) = RedisServer::start_or_skip("tiers_deny_cache") else {
            return;
        };
        let every = |interval: Duration, burst: u32| {
            Quota::with_interval(interval).unwrap().burst(nz(burst))
        };
        let layer =
            RateLimitLayer::with_store(store(&redis).await, every(Duration::from_secs(10), 2))
                .per(Header::api_key());
        let handle = layer.handle();
        let svc = stack(layer);
        assert_eq!(allowed(&svc, "ann", None, 5).await, 2);
        handle
            .set_quotas([every(Duration::from_millis(10), 2000)])
            .unwrap();
        let started = std::time::Instant::now();
        while allowed(&svc, "ann", None, 1).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still denied under the new quota"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn two_instances_on_one_redis_each_apply_the_quota_they_were_given() {
        let Some(redis) = RedisServer::start_or_skip("tiers_two_instances") else {
            return;
        };
        let a = RateLimitLayer::with_store(store(&redis).await, per_hour(10))
            .per(Header::api_key())
            .tier("pro", [per_hour(10)])
            .tier_of(plan::<()>);
        let b = RateLimitLayer::with_store(store(&redis).await, per_hour(10))
            .per(Header::api_key())
            .tier("pro", [per_hour(10)])
            .tier_of(plan::<()>);
        let (ha, hb) = (a.handle(), b.handle());
        let (a, b) = (stack(a), stack(b));

        // One bucket for both instances.
        assert_eq!(allowed(&a, "ann", Some(Plan::Pro), 4).await, 4);
        assert_eq!(allowed(&b, "ann", Some(Plan::Pro), 4).await, 4);
        // The fleet moves pro to 20 an hour, instance by instance (config
        // reload does this on each): the shared bucket (8 of 10 spent, so
        // 16 of 20) is read under the new quota by both.
        ha.set_tier("pro", [per_hour(20)]).unwrap();
        hb.set_tier("pro", [per_hour(20)]).unwrap();
        assert_eq!(allowed(&a, "ann", Some(Plan::Pro), 2).await, 2);
        assert_eq!(allowed(&b, "ann", Some(Plan::Pro), 10).await, 2);
    }
}
