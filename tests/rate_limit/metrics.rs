//! The counters of `palisade_rate_limit_*` after a known sequence of
//! decisions, read from a thread-local `DebuggingRecorder`.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use crate::nz;
use palisade::rate_limit::{
    Decision, Error, Limits, OnStoreError, Quota, RateLimitLayer, Store, StoreError,
};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A store that always fails.
#[derive(Clone)]
struct Broken;

impl Store for Broken {
    async fn check(&self, _: &str, _: &Limits, _: u32) -> Result<Decision, StoreError> {
        Err(StoreError::Timeout(Duration::from_millis(50)))
    }
}

/// A store whose every answer is a denial from a local cache.
#[derive(Clone)]
struct DeniesFromCache;

impl Store for DeniesFromCache {
    async fn check(&self, _: &str, _: &Limits, _: u32) -> Result<Decision, StoreError> {
        let d = Duration::from_secs(1);
        Ok(Decision::denied(0, 0, d, d).cached())
    }
}

type Req = Option<&'static str>;

fn echo()
-> impl Service<Req, Response = &'static str, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|_: Req| async { Ok::<_, Infallible>("ok") })
}

fn by_user(r: &Req) -> Option<String> {
    r.map(str::to_owned)
}

async fn send<S>(svc: &mut S, req: Req) -> Result<&'static str, Error<Infallible>>
where
    S: Service<Req, Response = &'static str, Error = Error<Infallible>>,
{
    svc.ready().await?.call(req).await
}

/// The metrics of `test`, run with a recorder of this thread only.
fn recorded<F: Future>(test: impl FnOnce() -> F) -> BTreeMap<String, f64> {
    crate::recording::record_metrics("palisade_rate_limit_", test).1
}

fn entry(metric: &str, name: &str, outcome: Option<&str>, n: u32) -> (String, f64) {
    let labels = match outcome {
        Some(outcome) => format!("name=\"{name}\",outcome=\"{outcome}\""),
        None => format!("name=\"{name}\""),
    };
    (format!("{metric}{{{labels}}}"), f64::from(n))
}

const DECISIONS: &str = "palisade_rate_limit_decisions_total";
const LOCAL: &str = "palisade_rate_limit_local_denials_total";

#[test]
fn a_known_sequence_gives_exact_counts_per_name_and_outcome() {
    let counts = recorded(|| async {
        // Burst 3: five requests of one key, three allowed then two denied;
        // one without a key, rejected.
        let mut api = RateLimitLayer::new(Quota::per_hour(nz(3)))
            .per(by_user)
            .name("api")
            .layer(echo());
        for i in 0..5 {
            let result = send(&mut api, Some("ann")).await;
            assert_eq!(result.is_ok(), i < 3, "request {i}: {result:?}");
        }
        assert!(matches!(
            send(&mut api, None).await,
            Err(Error::MissingCallerKey)
        ));
        // A request that costs more than the burst never reaches the store.
        let mut costly = RateLimitLayer::new(Quota::per_hour(nz(3)))
            .cost(|_: &Req| 4)
            .name("costly")
            .layer(echo());
        assert!(matches!(
            send(&mut costly, None).await,
            Err(Error::CostTooHigh { .. })
        ));

        // Shadow mode: burst 1, three requests, all pass.
        let mut shadow = RateLimitLayer::new(Quota::per_hour(nz(1)))
            .shadow(true)
            .name("shadow")
            .layer(echo());
        for _ in 0..3 {
            assert!(send(&mut shadow, None).await.is_ok());
        }

        // A failing store, open then closed; the unnamed layer is "default".
        let mut open = RateLimitLayer::with_store(Broken, Quota::per_hour(nz(1))).layer(echo());
        assert!(send(&mut open, None).await.is_ok());
        let mut closed = RateLimitLayer::with_store(Broken, Quota::per_hour(nz(1)))
            .on_store_error(OnStoreError::FailClosed)
            .name("closed")
            .layer(echo());
        assert!(matches!(
            send(&mut closed, None).await,
            Err(Error::Store(_))
        ));

        // Denials a store answered from its local cache, counted apart too.
        let mut cached = RateLimitLayer::with_store(DeniesFromCache, Quota::per_hour(nz(1)))
            .name("cached")
            .layer(echo());
        for _ in 0..2 {
            assert!(matches!(
                send(&mut cached, None).await,
                Err(Error::Limited(_))
            ));
        }
    });
    let expected = BTreeMap::from([
        entry(DECISIONS, "api", Some("allowed"), 3),
        entry(DECISIONS, "api", Some("denied"), 2),
        entry(DECISIONS, "api", Some("missing_caller_key"), 1),
        entry(DECISIONS, "costly", Some("denied"), 1),
        entry(DECISIONS, "shadow", Some("allowed"), 1),
        entry(DECISIONS, "shadow", Some("shadow_denied"), 2),
        entry(DECISIONS, "default", Some("failed_open"), 1),
        entry(DECISIONS, "closed", Some("failed_closed"), 1),
        entry(DECISIONS, "cached", Some("denied"), 2),
        entry(LOCAL, "cached", None, 2),
    ]);
    assert_eq!(counts, expected);
}

#[test]
fn clones_of_a_service_count_under_one_name() {
    let counts = recorded(|| async {
        let svc = RateLimitLayer::new(Quota::per_hour(nz(2)))
            .name("shared")
            .layer(echo());
        for _ in 0..3 {
            let _ = svc.clone().oneshot(None).await;
        }
    });
    let expected = BTreeMap::from([
        entry(DECISIONS, "shared", Some("allowed"), 2),
        entry(DECISIONS, "shared", Some("denied"), 1),
    ]);
    assert_eq!(counts, expected);
}
