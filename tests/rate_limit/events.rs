//! Every decision is one event with the fields of `palisade::observability`,
//! and the raw key never reaches the logs.

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use palisade::key::{Header, KeyExtractor};
use palisade::observability::redact_key;
use palisade::rate_limit::{
    Decision, Limits, OnStoreError, Quota, RateLimitLayer, Store, StoreError,
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::nz;
use crate::support::CapturedLogs;

const SECRET: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";

/// A store that always fails.
#[derive(Clone)]
struct Broken;

impl Store for Broken {
    async fn check(&self, _: &str, _: &Limits, _: u32) -> Result<Decision, StoreError> {
        // A cause behind the error, as a Redis failure has: the log line
        // must carry it.
        Err(StoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
        ))))
    }
}

fn req(api_key: Option<&str>) -> Request<()> {
    let mut b = Request::get("/");
    if let Some(k) = api_key {
        b = b.header("x-api-key", k);
    }
    b.body(()).unwrap()
}

async fn send<S>(svc: &mut S, api_key: Option<&str>)
where
    S: Service<Request<()>>,
{
    if let Ok(ready) = svc.ready().await {
        let _ = ready.call(req(api_key)).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn decisions_carry_the_uniform_fields_and_a_digest_of_the_key() {
    let logs = CapturedLogs::start();

    let handler = service_fn(|_: Request<()>| async { Ok::<_, Infallible>("ok") });
    let mut api = RateLimitLayer::new(Quota::per_hour(nz(1)))
        .per(Header::api_key())
        .name("api")
        .layer(handler);
    send(&mut api, Some(SECRET)).await;
    send(&mut api, Some(SECRET)).await;
    send(&mut api, None).await;
    for policy in [OnStoreError::FailOpen, OnStoreError::FailClosed] {
        let mut broken = RateLimitLayer::with_store(Broken, Quota::per_hour(nz(1)))
            .per(Header::api_key())
            .on_store_error(policy)
            .name("api")
            .layer(handler);
        send(&mut broken, Some(SECRET)).await;
    }
    tokio::time::advance(Duration::from_secs(1)).await;

    let log = logs.text();
    let key = Header::api_key().extract(&req(Some(SECRET))).unwrap();
    assert!(key.contains(SECRET), "the extractor's key holds the secret");
    let digest = format!("key={}", redact_key(&key));
    for (level, outcome, keyed) in [
        ("TRACE", "allowed", true),
        ("DEBUG", "denied", true),
        ("DEBUG", "missing_caller_key", false),
        (" WARN", "failed_open", true),
        (" WARN", "failed_closed", true),
    ] {
        let outcome_field = format!("outcome=\"{outcome}\"");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&outcome_field)).collect();
        assert_eq!(lines.len(), 1, "one {outcome} event in:\n{log}");
        let line = lines[0];
        assert!(line.contains(level), "{outcome} at {level}: {line}");
        assert!(line.contains("layer=\"rate_limit\""), "{line}");
        assert!(line.contains("name=\"api\""), "{line}");
        assert_eq!(line.contains(&digest), keyed, "{digest} in {line}");
        assert_eq!(line.contains("latency_us="), keyed, "{line}");
        if outcome.starts_with("failed") {
            assert!(line.contains("connection refused"), "the cause in {line}");
        }
    }
    assert!(!log.contains(SECRET), "the raw key is in the logs:\n{log}");
    assert!(
        !log.contains("x-api-key:"),
        "a key prefix is in the logs:\n{log}"
    );
}
