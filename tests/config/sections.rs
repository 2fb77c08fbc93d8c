//! The sections of the layers that hold code (a classifier, a store, a body
//! type): read from a file, refused with the field's path, set on a layer
//! built in code, and named in a warning when a reload changes them.
#![cfg(all(
    feature = "retry",
    feature = "hedge",
    feature = "idempotency",
    feature = "adaptive-concurrency",
    feature = "throttle",
    feature = "validate",
    feature = "timeout",
    feature = "bulkhead"
))]

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Aimd};
use palisade::attempt::{ErrorIsRetryable, HttpClassifier};
use palisade::config::{Config, Handles, HedgeConfig, IdempotencyConfig, JitterConfig, Reloader};
use palisade::hedge::HedgeLayer;
use palisade::idempotency::IdempotencyLayer;
use palisade::rate_limit::{Quota, RateLimitLayer};
use palisade::retry::RetryLayer;
use palisade::throttle::ThrottleLayer;
use palisade::validate::ValidateLayer;
use tower::{Layer, ServiceExt, service_fn};

use crate::reload::TempFile;
use crate::support::CapturedLogs;

const FILE: &str = r#"
[retry.payment]
max_attempts = 4
backoff = { base = "100ms", max = "2s", jitter = "decorrelated" }
per_try_timeout = "1s"
max_retry_after = "10s"

[hedge.search]
percentile = 0.9
window = "30s"
min_samples = 50
min_delay = "20ms"
max_hedges = 2

[idempotency.orders]
methods = ["POST", "PUT"]
optional = true
fingerprint_headers = ["X-Tenant"]
fingerprint_mode = "canonical_json"
body_limit = 65536
response_body_limit = 32768
stored_headers = ["content-type", "location"]
replay_session_headers = true
ttl = "1h"
lease = "5s"
request_timeout = "30s"
on_cancel = "hold"
on_store_error = "fail_open"
wait_for_in_flight = "2s"
in_flight_retry_after = "3s"

[adaptive_concurrency.api]
queue = { max_queued = 4, max_wait = "1s" }
back_pressure = true
retry_after = "7s"

[throttle.partner]
max_wait = "45s"
pause = "3s"
adaptive = { k = 3.0, window = "5m" }

[validate.orders]
content_types = ["application/json", "application/merge-patch+json"]
produces = ["application/json"]
body_limit = 4096
unknown_fields = "allow"
max_errors = 5
"#;

fn config() -> Config {
    Config::from_toml(FILE).unwrap()
}

#[test]
fn each_section_reads_from_a_file_and_writes_back_the_same() {
    let config = config();
    let retry = &config.retry["payment"];
    assert_eq!(retry.max_attempts.unwrap().get(), 4);
    let backoff = retry.backoff.as_ref().unwrap();
    assert_eq!(backoff.base, Duration::from_millis(100));
    assert_eq!(backoff.jitter, Some(JitterConfig::Decorrelated));
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(1)));
    assert_eq!(config.hedge["search"].percentile, Some(0.9));
    assert_eq!(config.hedge["search"].max_hedges, Some(2));
    let orders = &config.idempotency["orders"];
    assert_eq!(orders.methods.as_deref().unwrap(), ["POST", "PUT"]);
    assert_eq!(orders.lease, Some(Duration::from_secs(5)));
    assert_eq!(orders.optional, Some(true));
    let api = &config.adaptive_concurrency["api"];
    assert_eq!(api.queue.as_ref().unwrap().max_queued, 4);
    assert_eq!(api.retry_after, Some(Duration::from_secs(7)));
    let partner = &config.throttle["partner"];
    assert_eq!(partner.max_wait, Some(Duration::from_secs(45)));
    assert_eq!(partner.adaptive.as_ref().unwrap().k, Some(3.0));
    assert_eq!(config.validate["orders"].body_limit, Some(4096));
    assert_eq!(config.validate["orders"].max_errors.unwrap().get(), 5);

    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), config, "{text}");

    // An environment variable overrides a value of these sections too.
    let config = Config::from_toml_with_env(
        FILE,
        "PALISADE",
        [("PALISADE__HEDGE__SEARCH__MAX_HEDGES", "3")],
    )
    .unwrap();
    assert_eq!(config.hedge["search"].max_hedges, Some(3));
}

#[test]
fn a_bad_value_of_each_section_is_refused_with_its_path() {
    let cases = [
        (
            "[retry.p]\nbackoff = { base = \"0s\", max = \"1s\" }",
            "retry.p.backoff.base: ",
            "more than zero",
        ),
        (
            "[retry.p]\nbackoff = { base = \"2s\", max = \"1s\" }",
            "retry.p.backoff.max: ",
            "at least base",
        ),
        (
            "[retry.p]\nbackoff = { base = \"1s\", max = \"2s\", jitter = \"wild\" }",
            "retry.p.backoff.jitter: ",
            "unknown variant `wild`",
        ),
        (
            "[retry.p]\nmax_attempts = 0",
            "retry.p.max_attempts: ",
            "nonzero",
        ),
        (
            "[retry.p]\nattempts = 3",
            "retry.p.attempts: ",
            "unknown field",
        ),
        (
            "[hedge.h]\npercentile = 1.0",
            "hedge.h.percentile: ",
            "less than 1",
        ),
        (
            "[hedge.h]\nwindow = \"0s\"",
            "hedge.h.window: ",
            "more than zero",
        ),
        (
            "[hedge.h]\nmax_hedges = 17",
            "hedge.h.max_hedges: ",
            "at most 16",
        ),
        (
            "[idempotency.o]\nmethods = [\"PO ST\"]",
            "idempotency.o.methods[0]: ",
            "not a method",
        ),
        (
            "[idempotency.o]\nfingerprint_headers = [\"x-ok\", \"bad header\"]",
            "idempotency.o.fingerprint_headers[1]: ",
            "not a header name",
        ),
        (
            "[idempotency.o]\nstored_headers = [\"\"]",
            "idempotency.o.stored_headers[0]: ",
            "not a header name",
        ),
        (
            "[idempotency.o]\nlease = \"50ms\"",
            "idempotency.o.lease: ",
            "not between 100ms and 1day",
        ),
        (
            "[idempotency.o]\nttl = \"400days\"",
            "idempotency.o.ttl: ",
            "not between",
        ),
        (
            "[idempotency.o]\nwait_for_in_flight = \"11m\"",
            "idempotency.o.wait_for_in_flight: ",
            "not between",
        ),
        (
            "[idempotency.o]\nin_flight_retry_after = \"2h\"",
            "idempotency.o.in_flight_retry_after: ",
            "not between",
        ),
        (
            "[idempotency.o]\non_cancel = \"later\"",
            "idempotency.o.on_cancel: ",
            "unknown variant `later`",
        ),
        (
            "[adaptive_concurrency.a]\nqueue = { max_queued = 0, max_wait = \"1s\" }",
            "adaptive_concurrency.a.queue: ",
            "",
        ),
        (
            "[adaptive_concurrency.a]\nretry_after = \"soon\"",
            "adaptive_concurrency.a.retry_after: ",
            "not a duration",
        ),
        (
            "[throttle.t]\nadaptive = { k = 0.5 }",
            "throttle.t.adaptive.k: ",
            "at least 1",
        ),
        (
            "[throttle.t]\npause = 3",
            "throttle.t.pause: ",
            "expected a string",
        ),
        (
            "[validate.v]\ncontent_types = [\"json\"]",
            "validate.v.content_types[0]: ",
            "not a media type",
        ),
        (
            "[validate.v]\nproduces = [\"text/plain\", \"plain\"]",
            "validate.v.produces[1]: ",
            "not a media type",
        ),
        (
            "[validate.v]\nmax_errors = 0",
            "validate.v.max_errors: ",
            "nonzero",
        ),
        (
            "[validate.v]\nunknown_fields = \"ignore\"",
            "validate.v.unknown_fields: ",
            "unknown variant `ignore`",
        ),
    ];
    for (text, field, reason) in cases {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.starts_with(field), "{text:?}: {err}");
        assert!(err.contains(reason), "{text:?}: {err}");
    }
}

#[test]
fn apply_sets_the_values_of_a_retry_and_a_hedge_and_keeps_the_others() {
    let config = config();
    let code = RetryLayer::new(ErrorIsRetryable)
        .name("payment")
        .max_retry_after(Duration::from_secs(99));
    let layer = config.retry["payment"]
        .apply(code.clone(), "retry.payment")
        .unwrap();
    let debug = format!("{layer:?}");
    for part in [
        "\"payment\"",
        "max_attempts: 4",
        "base: 100ms, max: 2s, jitter: Decorrelated",
        "per_try_timeout: Some(1s)",
        "max_retry_after: 10s",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
    // A section that leaves a value out leaves the layer's.
    let partial = Config::from_toml("[retry.payment]\nmax_attempts = 2")
        .unwrap()
        .retry["payment"]
        .apply(code, "retry.payment")
        .unwrap();
    let debug = format!("{partial:?}");
    assert!(debug.contains("max_attempts: 2"), "{debug}");
    assert!(debug.contains("max_retry_after: 99s"), "{debug}");
    assert!(debug.contains("per_try_timeout: None"), "{debug}");

    let hedge = config.hedge["search"]
        .apply(HedgeLayer::new(HttpClassifier::default()), "hedge.search")
        .unwrap();
    let debug = format!("{hedge:?}");
    for part in [
        "percentile: 0.9",
        "window: 30s",
        "min_samples: 50",
        "min_delay: 20ms",
        "max_hedges: 2",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
    // A section built in code is checked by apply as by the file.
    let bad = HedgeConfig {
        percentile: Some(f64::NAN),
        ..HedgeConfig::default()
    };
    let err = bad
        .apply(HedgeLayer::new(HttpClassifier::default()), "hedge.x")
        .unwrap_err();
    assert!(err.to_string().starts_with("hedge.x.percentile: "), "{err}");
}

#[test]
fn apply_sets_the_values_of_an_idempotency_layer_and_keeps_the_others() {
    let config = config();
    let code = IdempotencyLayer::new().name("orders").body_limit(1234);
    let layer = config.idempotency["orders"]
        .apply(code.clone(), "idempotency.orders")
        .unwrap();
    let debug = format!("{layer:?}");
    for part in [
        "\"orders\"",
        "methods: [POST, PUT]",
        "required: false",
        "fingerprint_headers: [\"x-tenant\"]",
        "fingerprint_mode: CanonicalJson",
        "body_limit: 65536",
        "response_body_limit: 32768",
        "stored_headers: Some([\"content-type\", \"location\"])",
        "replay_session_headers: true",
        "ttl: 3600s",
        "lease: 5s",
        "request_timeout: Some(30s)",
        "on_cancel: Hold",
        "on_store_error: FailOpen",
        "wait: Some(2s)",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
    let partial = IdempotencyConfig {
        optional: Some(true),
        ..IdempotencyConfig::default()
    }
    .apply(code, "idempotency.orders")
    .unwrap();
    let debug = format!("{partial:?}");
    assert!(debug.contains("required: false"), "{debug}");
    assert!(debug.contains("body_limit: 1234"), "{debug}");
}

#[test]
fn apply_sets_the_values_of_a_throttle_and_a_validator() {
    let config = config();
    let throttle = config.throttle["partner"]
        .apply(ThrottleLayer::new().name("partner"), "throttle.partner")
        .unwrap();
    let debug = format!("{throttle:?}");
    for part in [
        "\"partner\"",
        "max_wait: 45s",
        "pause: 3s",
        "k: 3.0",
        "window: 300s",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }

    let validate = config.validate["orders"]
        .apply(ValidateLayer::new().name("orders"), "validate.orders")
        .unwrap();
    let debug = format!("{validate:?}");
    for part in [
        "\"orders\"",
        "content_types: Some([\"application/json\", \"application/merge-patch+json\"])",
        "produces: Some([\"application/json\"])",
        "limit: 4096",
        "unknown_fields: Allow",
        "max_errors: 5",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
}

#[test]
fn timeout_and_bulkhead_sections_build_their_layers() {
    let config = Config::from_toml(
        "[timeout.payment]\ntimeout = \"1m 30s\"\n\
         [bulkhead.orders]\nmax_in_flight = 7\nqueue = { max_queued = 32, max_wait = \"500ms\" }",
    )
    .unwrap();
    let timeout = config.timeout["payment"]
        .layer("payment", "timeout.payment")
        .unwrap();
    assert_eq!(timeout.timeout(), Duration::from_secs(90));
    assert!(
        format!("{timeout:?}").contains("\"payment\""),
        "{timeout:?}"
    );
    let bulkhead = config.bulkhead["orders"]
        .layer("orders", "bulkhead.orders")
        .unwrap();
    let debug = format!("{bulkhead:?}");
    for part in [
        "\"orders\"",
        "max_in_flight: 7",
        "max_queued: 32",
        "max_wait: 500ms",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
}

/// The queue a section sets makes a call over the limit wait instead of
/// being refused.
#[tokio::test(start_paused = true)]
async fn an_adaptive_limiters_queue_from_its_section_holds_a_call() {
    let config = config();
    let algorithm = Aimd::new().bounds(1, 1, 1).unwrap();
    let code = AdaptiveConcurrencyLayer::new(algorithm).name("api");
    let handle = code.handle();
    let layer = config.adaptive_concurrency["api"]
        .apply(code, "adaptive_concurrency.api")
        .unwrap();
    assert!(
        format!("{layer:?}").contains("retry_after: 7s"),
        "{layer:?}"
    );

    let release = Arc::new(tokio::sync::Notify::new());
    let svc = layer.layer(service_fn({
        let release = release.clone();
        move |_: ()| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok::<_, Infallible>(())
            }
        }
    }));
    let first = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);
    let second = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert_eq!(handle.queued(), 1, "the second call waits in the queue");
    release.notify_one();
    first.await.unwrap().unwrap();
    tokio::task::yield_now().await;
    release.notify_one();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_reload_that_changes_a_start_only_section_says_so_and_applies_the_rest() {
    let logs = CapturedLogs::start();
    let file_text = |count: u32, attempts: u32, hedge: bool| {
        let mut text = format!(
            "[rate_limit.api]\nquotas = [{{ count = {count}, per = \"1h\" }}]\n\
             [retry.payment]\nmax_attempts = {attempts}\n"
        );
        if hedge {
            text.push_str("[hedge.search]\nmax_hedges = 2\n");
        }
        text
    };
    let file = TempFile::new("start-only", &file_text(3, 3, false));
    let api = RateLimitLayer::new(Quota::per_hour(NonZeroU32::new(1).unwrap())).name("api");
    let reloader = Reloader::new(&file.0, Handles::new().rate_limit("api", api.handle()));
    reloader.load().unwrap();
    let warning = "retry.payment changes at the next start only";
    assert!(
        !logs.text().contains("changes at the next start"),
        "{}",
        logs.text()
    );

    // The quota and the retry change: the quota is in force, the retry
    // is named.
    file.write(&file_text(5, 4, false));
    assert!(reloader.reload().unwrap());
    assert_eq!(api.limits().quotas()[0].max_burst().get(), 5);
    let current = reloader.current().unwrap();
    assert_eq!(current.retry["payment"].max_attempts.unwrap().get(), 4);
    let text = logs.text();
    let warned: Vec<_> = text
        .lines()
        .filter(|l| l.contains("changes at the next start only"))
        .collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(warned[0].starts_with(" WARN "), "{text}");
    assert!(warned[0].contains(warning), "{text}");

    // Only the quota changes: no warning. A new hedge section: its own.
    file.write(&file_text(6, 4, false));
    assert!(reloader.reload().unwrap());
    file.write(&file_text(6, 4, true));
    assert!(reloader.reload().unwrap());
    let text = logs.text();
    assert_eq!(text.matches(warning).count(), 1, "{text}");
    assert_eq!(
        text.matches("hedge.search changes at the next start only")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("changes at the next start only").count(), 2);
}

/// A bulkhead's limit changes at run time; its queue is read at the start,
/// so a new queue is said to wait for the next start.
#[tokio::test]
async fn a_bulkhead_queue_change_waits_for_the_next_start_and_its_limit_does_not() {
    use palisade::bulkhead::BulkheadLayer;

    let logs = CapturedLogs::start();
    let text = |limit: u32, queued: u32| {
        format!(
            "[bulkhead.orders]\nmax_in_flight = {limit}\nqueue = {{ max_queued = {queued}, max_wait = \"1s\" }}\n"
        )
    };
    let file = TempFile::new("bulkhead-queue", &text(2, 4));
    let bulkhead = BulkheadLayer::new(std::num::NonZeroU32::new(1).unwrap());
    let reloader = Reloader::new(
        &file.0,
        Handles::new().bulkhead("orders", bulkhead.handle()),
    );
    reloader.load().unwrap();
    assert_eq!(bulkhead.handle().max_in_flight().get(), 2);

    file.write(&text(5, 4));
    assert!(reloader.reload().unwrap());
    assert_eq!(bulkhead.handle().max_in_flight().get(), 5);
    assert!(
        !logs.text().contains("bulkhead.orders.queue"),
        "{}",
        logs.text()
    );

    file.write(&text(5, 8));
    assert!(reloader.reload().unwrap());
    assert!(
        logs.text()
            .contains("bulkhead.orders.queue changes at the next start only"),
        "{}",
        logs.text()
    );
}
