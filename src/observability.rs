//! What every layer reports: metrics, tracing fields, and redacted keys.
//!
//! # Tracing
//!
//! Every decision a layer makes is one `tracing` event, with the same field
//! names in every layer, so one query finds them all:
//!
//! | field | value |
//! |---|---|
//! | `layer` | `"timeout"`, `"circuit_breaker"`, `"rate_limit"`, `"idempotency"`, `"validate"`, `"bulkhead"`, `"adaptive_concurrency"`, `"retry"`, `"hedge"` or `"throttle"` |
//! | `name` | the layer's name (see each layer's `name` setter), `"default"` when unset |
//! | `key` | the decision's key, redacted by [`redact_key`]; absent when the layer has none |
//! | `outcome` | what the layer decided, one of the `outcome` label values below; `accepted` or `rejected` for `validate` (whose metric counts rejections by `status`) |
//! | `latency_us` | how long the decision (or the guarded call) took, in microseconds, where the layer measures it |
//! | `attempt` | for `hedge`: which attempt, 0 for the first one, 1 for the first hedge |
//!
//! Allowed calls are logged at `TRACE` or `DEBUG`, rejections at `DEBUG`, store
//! failures at `WARN`. No raw key (an API key, a client address, an
//! `Idempotency-Key`) is ever logged: only its [`redact_key`] digest.
//!
//! # Metrics
//!
//! With the feature `metrics`, every layer records through the [`metrics`]
//! facade, so any exporter works (Prometheus, StatsD, OpenTelemetry). Without
//! an installed recorder, recording costs a few nanoseconds; without the
//! feature, nothing at all. Names and labels follow Prometheus conventions:
//! a `palisade_` prefix, base units (seconds), `_total` on counters.
//! Call [`describe_metrics`] once at start to give an exporter their help text.
//! A layer builds its metric keys once, when it is configured, and looks the
//! recorder up on every decision: a recorder installed after the layers were
//! built (or a test's `metrics::with_local_recorder`) still receives
//! everything, and recording allocates nothing.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `palisade_timeout_calls_total` | counter | `name`, `outcome` = `completed` \| `timed_out` |
//! | `palisade_circuit_breaker_calls_total` | counter | `name`, `outcome` = `success` \| `failure` \| `slow_success` \| `slow_failure` \| `ignored` \| `rejected` \| `disabled` (let through unclassified while disabled) |
//! | `palisade_circuit_breaker_transitions_total` | counter | `name`, `from`, `to` = `closed` \| `open` \| `half_open` \| `forced_open` \| `forced_closed` \| `disabled` |
//! | `palisade_circuit_breaker_state` | gauge | `name`, `state`; 1 for the current state, 0 for the others (a keyed breaker: the number of keys in each state) |
//! | `palisade_config_reloads_total` | counter | `outcome` = `applied` \| `refused`; a config file read by a `config::Reloader` (feature `config`): put in force, or refused with the one in force kept |
//! | `palisade_circuit_breaker_fleet_outages_total` | counter | `name`; a breaker shared across instances lost Redis (error, timeout, cut) and decides alone until it answers again: one per outage |
//! | `palisade_rate_limit_decisions_total` | counter | `name`, `outcome` = `allowed` \| `denied` \| `shadow_denied` \| `missing_caller_key` \| `failed_open` \| `failed_closed` |
//! | `palisade_rate_limit_local_denials_total` | counter | `name`; denials answered by the local deny cache, without the store |
//! | `palisade_rate_limit_overflow_decisions_total` | counter | `name`; decisions (allowed or denied) made on the store's shared overflow bucket because it had no room for a new key |
//! | `palisade_idempotency_requests_total` | counter | `name`, `outcome` = `executed` \| `replayed` \| `conflict` \| `mismatch` \| `invalid_key` \| `missing_caller_key` \| `body_rejected` \| `gone` \| `not_stored` \| `failed_open` \| `failed_closed` |
//! | `palisade_validation_rejections_total` | counter | `name`, `status` = `400` \| `406` \| `413` \| `415` \| `422` |
//! | `palisade_bulkhead_calls_total` | counter | `name`, `outcome` = `admitted` \| `full` \| `waited` \| `displaced` \| `stale` \| `failed_open` \| `failed_closed` |
//! | `palisade_adaptive_concurrency_calls_total` | counter | `name`, `outcome` = `admitted` \| `full` \| `waited` \| `displaced` \| `stale` |
//! | `palisade_adaptive_concurrency_limit` | gauge | `name`; the current limit, set on each change |
//! | `palisade_throttle_calls_total` | counter | `name`, `outcome` = `sent` (at once) \| `waited` (sent after waiting for the upstream's schedule) \| `throttled` (refused: the wait does not fit the deadline or the maximum wait) \| `rejected` (by the adaptive throttle) |
//! | `palisade_throttle_wait_seconds` | histogram | `name`; the wait of each call that waited |
//! | `palisade_hedge_calls_total` | counter | `name`, `outcome` = `primary` (the first attempt answered) \| `hedge` (a hedge answered) \| `not_replayable` (could have been hedged, but the request cannot be sent twice) |
//! | `palisade_hedge_hedges_total` | counter | `name`, `outcome` = `sent` \| `budget_exhausted`: one per hedge decision |
//! | `palisade_hedge_delay_seconds` | gauge | `name`; the current hedge delay, set when it is computed again; 0 while the window holds too few samples |
//! | `palisade_retry_decisions_total` | counter | `name`, `outcome` = `done` \| `retried` \| `exhausted` (max attempts) \| `budget_exhausted` \| `deadline` (no time for another attempt) \| `not_replayable` \| `retry_after_too_long` \| `stopped`; one per finished attempt, and one (`deadline` or `stopped`) for a retry that could not start |
//! | `palisade_retry_wait_seconds` | histogram | `name`; each wait before a retry |
//! | `palisade_store_errors_total` | counter | `layer`, `store` = `memory` \| `redis` \| `redis_cluster`, `op` = `decide` (rate limit) \| `claim` \| `complete` \| `release` \| `renew` (idempotency) \| `acquire` \| `release` \| `renew` (bulkhead); only the Redis stores record it; a timeout counts as an error |
//! | `palisade_store_duration_seconds` | histogram | `layer`, `store`, `op`: one store round trip |

use std::hash::Hasher;

/// `palisade_timeout_calls_total`: calls through a timeout layer, by outcome.
pub const TIMEOUT_CALLS: &str = "palisade_timeout_calls_total";
/// `palisade_circuit_breaker_calls_total`: calls through a breaker, by outcome.
pub const CIRCUIT_BREAKER_CALLS: &str = "palisade_circuit_breaker_calls_total";
/// `palisade_circuit_breaker_transitions_total`: state changes of a breaker.
pub const CIRCUIT_BREAKER_TRANSITIONS: &str = "palisade_circuit_breaker_transitions_total";
/// `palisade_circuit_breaker_state`: 1 for the breaker's current state, 0 for the others.
pub const CIRCUIT_BREAKER_STATE: &str = "palisade_circuit_breaker_state";
/// `palisade_circuit_breaker_fleet_outages_total`: times a breaker shared
/// across instances lost Redis and went on deciding alone.
pub const CIRCUIT_BREAKER_FLEET_OUTAGES: &str = "palisade_circuit_breaker_fleet_outages_total";
/// `palisade_config_reloads_total`: configs a
/// [`Reloader`](crate::config::Reloader) read, by outcome.
pub const CONFIG_RELOADS: &str = "palisade_config_reloads_total";
/// `palisade_rate_limit_decisions_total`: rate-limit decisions, by outcome.
pub const RATE_LIMIT_DECISIONS: &str = "palisade_rate_limit_decisions_total";
/// `palisade_rate_limit_local_denials_total`: denials answered by the local deny cache.
pub const RATE_LIMIT_LOCAL_DENIALS: &str = "palisade_rate_limit_local_denials_total";
/// `palisade_rate_limit_overflow_decisions_total`: decisions made on a full store's overflow bucket.
pub const RATE_LIMIT_OVERFLOW: &str = "palisade_rate_limit_overflow_decisions_total";
/// `palisade_idempotency_requests_total`: requests through the idempotency layer, by outcome.
pub const IDEMPOTENCY_REQUESTS: &str = "palisade_idempotency_requests_total";
/// `palisade_validation_rejections_total`: requests rejected by validation, by status.
pub const VALIDATION_REJECTIONS: &str = "palisade_validation_rejections_total";
/// `palisade_bulkhead_calls_total`: requests through a bulkhead, by outcome.
pub const BULKHEAD_CALLS: &str = "palisade_bulkhead_calls_total";
/// `palisade_adaptive_concurrency_calls_total`: requests through an adaptive limiter, by outcome.
pub const ADAPTIVE_CONCURRENCY_CALLS: &str = "palisade_adaptive_concurrency_calls_total";
/// `palisade_adaptive_concurrency_limit`: an adaptive limiter's current limit.
pub const ADAPTIVE_CONCURRENCY_LIMIT: &str = "palisade_adaptive_concurrency_limit";
/// `palisade_throttle_calls_total`: calls through a client-side throttle, by outcome.
pub const THROTTLE_CALLS: &str = "palisade_throttle_calls_total";
/// `palisade_throttle_wait_seconds`: how long a call waited for the upstream's schedule.
pub const THROTTLE_WAIT: &str = "palisade_throttle_wait_seconds";
/// `palisade_hedge_calls_total`: requests through a hedge layer, by which attempt answered.
pub const HEDGE_CALLS: &str = "palisade_hedge_calls_total";
/// `palisade_hedge_hedges_total`: hedge decisions, sent or refused by the budget.
pub const HEDGE_HEDGES: &str = "palisade_hedge_hedges_total";
/// `palisade_hedge_delay_seconds`: a hedge layer's current delay.
pub const HEDGE_DELAY: &str = "palisade_hedge_delay_seconds";
/// `palisade_retry_decisions_total`: finished attempts through a retry layer, by what followed.
pub const RETRY_DECISIONS: &str = "palisade_retry_decisions_total";
/// `palisade_retry_wait_seconds`: each wait of a retry layer before another attempt.
pub const RETRY_WAIT: &str = "palisade_retry_wait_seconds";
/// `palisade_store_errors_total`: failed store operations, by layer, store and operation.
pub const STORE_ERRORS: &str = "palisade_store_errors_total";
/// `palisade_store_duration_seconds`: the duration of one store round trip.
pub const STORE_DURATION: &str = "palisade_store_duration_seconds";

/// The `name` label and field of a layer that was not given a name.
pub const DEFAULT_NAME: &str = "default";

/// Registers the help text and unit of every palisade metric with the
/// installed recorder. Call it once, after installing the recorder.
///
/// ```
/// # #[cfg(feature = "metrics")] {
/// // e.g. after metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()
/// palisade::observability::describe_metrics();
/// # }
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TIMEOUT_CALLS, "Calls through a timeout layer, by outcome.");
    describe_counter!(
        CIRCUIT_BREAKER_CALLS,
        "Calls through a circuit breaker, by outcome."
    );
    describe_counter!(
        CIRCUIT_BREAKER_TRANSITIONS,
        "State transitions of a circuit breaker."
    );
    describe_gauge!(
        CIRCUIT_BREAKER_STATE,
        "1 for the circuit breaker's current state, 0 for the others."
    );
    describe_counter!(
        CIRCUIT_BREAKER_FLEET_OUTAGES,
        "Times a circuit breaker shared across instances lost Redis and decided alone."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config files read by a reloader: applied, or refused and the old config kept."
    );
    describe_counter!(RATE_LIMIT_DECISIONS, "Rate-limit decisions, by outcome.");
    describe_counter!(
        RATE_LIMIT_LOCAL_DENIALS,
        "Rate-limit denials answered by the local deny cache, without the store."
    );
    describe_counter!(
        RATE_LIMIT_OVERFLOW,
        "Rate-limit decisions made on a full store's shared overflow bucket."
    );
    describe_counter!(
        IDEMPOTENCY_REQUESTS,
        "Requests through the idempotency layer, by outcome."
    );
    describe_counter!(
        VALIDATION_REJECTIONS,
        "Requests rejected by validation, by status."
    );
    describe_counter!(BULKHEAD_CALLS, "Requests through a bulkhead, by outcome.");
    describe_counter!(
        ADAPTIVE_CONCURRENCY_CALLS,
        "Requests through an adaptive concurrency limiter, by outcome."
    );
    describe_gauge!(
        ADAPTIVE_CONCURRENCY_LIMIT,
        "The current limit of an adaptive concurrency limiter."
    );
    describe_counter!(
        THROTTLE_CALLS,
        "Calls through a client-side throttle, by outcome."
    );
    describe_histogram!(
        THROTTLE_WAIT,
        Unit::Seconds,
        "How long a call waited for the upstream's schedule."
    );
    describe_counter!(
        HEDGE_CALLS,
        "Requests through a hedge layer, by the attempt that answered."
    );
    describe_counter!(
        HEDGE_HEDGES,
        "Hedge decisions: hedges sent, or refused by the retry budget."
    );
    describe_gauge!(
        HEDGE_DELAY,
        Unit::Seconds,
        "The current delay before a hedge layer sends a hedge."
    );
    describe_counter!(
        RETRY_DECISIONS,
        "Finished attempts through a retry layer, by what followed."
    );
    describe_histogram!(
        RETRY_WAIT,
        Unit::Seconds,
        "Each wait of a retry layer before another attempt."
    );
    describe_counter!(STORE_ERRORS, "Failed store operations.");
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Duration of one store round trip."
    );
}

/// A short, stable digest of a key, for logs: the first 32 bits of a hash,
/// as 8 hex digits.
///
/// Equal keys give equal digests, so one client's requests can be followed
/// across log lines, but a digest does not give the key back: an API key, a
/// client address or an `Idempotency-Key` never reaches the logs in full.
///
/// ```
/// use palisade::observability::redact_key;
/// let digest = redact_key("sk_live_51H8").to_string();
/// assert_eq!(digest.len(), 8);
/// assert!(!digest.contains("sk_live"));
/// assert_eq!(digest, redact_key("sk_live_51H8").to_string());
/// ```
pub fn redact_key(key: &str) -> RedactedKey {
    redact_hashable(key)
}

/// The [`redact_key`] digest of any hashable key, such as a keyed circuit
/// breaker's: for a key of a string type (`String`, `&str`, `Arc<str>`) it
/// is exactly `redact_key(key)`, since they hash alike.
pub(crate) fn redact_hashable<K: std::hash::Hash + ?Sized>(key: &K) -> RedactedKey {
    // SipHash with fixed keys: the same digest in every process, so the
    // instances behind one load balancer log the same digest for one client.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    key.hash(&mut hasher);
    RedactedKey((hasher.finish() >> 32) as u32)
}

/// A duration as the `latency_us` field: whole microseconds, saturating.
#[cfg(any(
    feature = "timeout",
    feature = "rate-limit",
    feature = "idempotency",
    feature = "throttle",
    feature = "hedge",
    feature = "retry"
))]
pub(crate) fn latency_us(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The digest [`redact_key`] returns; displays as 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedactedKey(u32);

impl std::fmt::Display for RedactedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Recording through the `metrics` facade without allocating per call.
///
/// A layer builds its [`metrics::Key`]s once, when it is configured (the
/// `name` label is an `Arc`-backed string, so the key owns no copy of it),
/// and each decision looks the key up in the recorder in force at that
/// moment. Holding `Counter` handles instead would save the lookup, but a
/// handle registered before the application installs its recorder (or
/// outside a test's local recorder) would stay a no-op for good. Without a
/// recorder, a decision costs a thread-local read, an atomic load and a call
/// to the no-op recorder: no allocation, no hashing (the key's hash is
/// computed when it is built).
#[cfg(feature = "metrics")]
// With `metrics` but no layer, nothing records.
#[cfg_attr(
    not(any(
        feature = "timeout",
        feature = "circuit-breaker",
        feature = "rate-limit",
        feature = "idempotency",
        feature = "validate",
        feature = "bulkhead",
        feature = "adaptive-concurrency",
        feature = "throttle",
        feature = "hedge",
        feature = "retry"
    )),
    allow(dead_code)
)]
pub(crate) mod record {
    use std::sync::Arc;

    use metrics::{Key, Label, Level, Metadata, SharedString};

    static METADATA: Metadata<'static> =
        Metadata::new("palisade", Level::INFO, Some(module_path!()));

    /// The key of `metric` with the `name` label first, then `labels`.
    pub(crate) fn key(
        metric: &'static str,
        name: &Arc<str>,
        labels: &[(&'static str, &'static str)],
    ) -> Key {
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(Label::new("name", SharedString::from(name.clone())));
        all.extend(
            labels
                .iter()
                .map(|&(key, value)| Label::from_static_parts(key, value)),
        );
        Key::from_parts(metric, all)
    }

    /// Adds one to the counter `key`.
    #[inline]
    pub(crate) fn increment(key: &Key) {
        metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
    }

    /// Sets the gauge `key` to `value`.
    #[cfg(any(
        feature = "circuit-breaker",
        feature = "adaptive-concurrency",
        feature = "hedge"
    ))]
    pub(crate) fn set_gauge(key: &Key, value: f64) {
        metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA).set(value));
    }

    /// The key of `metric` with `labels` only (no `name`): the store metrics.
    #[cfg(all(
        feature = "redis",
        any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")
    ))]
    pub(crate) fn static_key(metric: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels = labels
            .iter()
            .map(|&(key, value)| Label::from_static_parts(key, value))
            .collect::<Vec<_>>();
        Key::from_parts(metric, labels)
    }

    /// Records `value` in the histogram `key`.
    #[cfg(any(
        feature = "throttle",
        feature = "retry",
        all(
            feature = "redis",
            any(feature = "rate-limit", feature = "idempotency", feature = "bulkhead")
        )
    ))]
    #[inline]
    pub(crate) fn histogram(key: &Key, value: f64) {
        metrics::with_recorder(|recorder| {
            recorder.register_histogram(key, &METADATA).record(value)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differ_for_different_keys_and_hide_the_key() {
        let a = redact_key("203.0.113.7").to_string();
        let b = redact_key("203.0.113.8").to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.contains("203"));
    }
}

/// An error and its chain of causes, joined by `: `, for log lines: an
/// error's `Display` says what failed and its `source()` says why, and a log
/// line needs both ("store unavailable: redis failed: connection refused").
#[cfg(any(
    feature = "rate-limit",
    feature = "idempotency",
    feature = "bulkhead",
    all(feature = "circuit-breaker", feature = "redis")
))]
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

#[cfg(any(
    feature = "rate-limit",
    feature = "idempotency",
    feature = "bulkhead",
    all(feature = "circuit-breaker", feature = "redis")
))]
impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(all(test, any(feature = "rate-limit", feature = "idempotency")))]
mod error_chain_tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("store unavailable")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_log_line_carries_every_cause() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "store unavailable: connection refused"
        );
    }
}
