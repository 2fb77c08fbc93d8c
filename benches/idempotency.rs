//! Idempotency-Key layer: added latency of a first execution and of a
//! replay over the bare service, with the memory store and with Redis, and
//! the Redis round trips per request, counted with `INFO commandstats` on a
//! private `redis-server`.
//!
//! `cargo bench -p palisade-benches --no-default-features --features idempotency --bench idempotency`

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade::idempotency::{IdempotencyLayer, MemoryStore, RedisStore, Store};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[path = "../tests/support/mod.rs"]
mod support;

const BODY: &str =
    r#"{"amount":4200,"currency":"eur","customer":"cus_123","description":"order 42"}"#;
const ANSWER: &str = r#"{"id":"ch_1","status":"succeeded","amount":4200}"#;

fn request(key: &str) -> Request<Full<Bytes>> {
    Request::post("/payments")
        .header("content-type", "application/json")
        .header("x-api-key", "k-bench")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

fn handler()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                .unwrap(),
        )
    })
}

/// One request through `svc`, body read to the end, as a server would.
async fn once<S, B>(svc: &S, req: Request<Full<Bytes>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = svc.clone().oneshot(req).await.unwrap();
    let body = response.into_body().collect().await.unwrap();
    std::hint::black_box(body);
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn fresh_key() -> String {
    format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn bench_store<St: Store>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: St) {
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::with_store(store))
        .service(handler());
    rt.block_on(once(&svc, request("replayed")));
    let mut group = c.benchmark_group(format!("idempotency/{name}"));
    group.bench_function("first execution", |b| {
        b.to_async(rt).iter(|| once(&svc, request(&fresh_key())))
    });
    group.bench_function("replay", |b| {
        b.to_async(rt).iter(|| once(&svc, request("replayed")))
    });
    group.finish();
}

/// First executions whose records expire at once, so the map stays small:
/// the per-request cost without the growth of a map that keeps a day of keys.
fn bench_memory_steady(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let layer = IdempotencyLayer::with_store(MemoryStore::new()).ttl(Duration::from_nanos(1));
    let svc = ServiceBuilder::new().layer(layer).service(handler());
    c.bench_function(
        "idempotency/memory/first execution, records expiring",
        |b| b.to_async(rt).iter(|| once(&svc, request(&fresh_key()))),
    );
}

/// Commands a client sent that are not scripts (scripts' inner commands
/// are counted too by `INFO commandstats`, under their own names).
fn other_client_calls(redis: &support::RedisServer) -> u64 {
    const IN_SCRIPTS: [&str; 7] = ["hmget", "pttl", "incr", "pexpire", "hset", "del", "hget"];
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let name = l.strip_prefix("cmdstat_")?.split(':').next()?;
            let skip = name.starts_with("eval")
                || name.starts_with("config")
                || name == "info"
                || IN_SCRIPTS.contains(&name);
            (!skip).then(|| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })?
        })
        .sum()
}

fn round_trips(rt: &tokio::runtime::Runtime, redis: &support::RedisServer, store: RedisStore) {
    const N: u64 = 1000;
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::with_store(store))
        .service(handler());
    rt.block_on(once(&svc, request("warm-up")));
    redis.cli(&["CONFIG", "RESETSTAT"]);
    rt.block_on(async {
        for i in 0..N {
            once(&svc, request(&format!("rt-{i}"))).await;
        }
    });
    let first = redis.command_calls(&["evalsha", "eval"]) as f64 / N as f64;
    let first_other = other_client_calls(redis);
    redis.cli(&["CONFIG", "RESETSTAT"]);
    rt.block_on(async {
        for i in 0..N {
            once(&svc, request(&format!("rt-{i}"))).await;
        }
    });
    let replay = redis.command_calls(&["evalsha", "eval"]) as f64 / N as f64;
    let replay_other = other_client_calls(redis);
    println!(
        "redis round trips per request (INFO commandstats, {N} requests each): first execution {first:.2}, replay {replay:.2}; other client commands: {first_other} and {replay_other}"
    );
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bare = handler();
    c.bench_function("idempotency/bare service", |b| {
        b.to_async(&rt).iter(|| once(&bare, request("k")))
    });
    // Unbounded: the default store refuses new keys past 100,000 records,
    // and the first-execution bench makes millions of keys that live a day.
    let unbounded = MemoryStore::with_max_keys(NonZeroUsize::MAX).max_bytes(NonZeroUsize::MAX);
    bench_store(c, &rt, "memory", unbounded);
    bench_memory_steady(c, &rt);

    let Some(redis) = support::RedisServer::start_or_skip("idempotency redis bench") else {
        return;
    };
    let store = rt
        .block_on(RedisStore::connect(&redis.url()))
        .unwrap()
        .timeout(Duration::from_secs(5));
    round_trips(&rt, &redis, store.clone());
    bench_store(c, &rt, "redis", store);
}

criterion_group! {
    name = idempotency;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(idempotency);
