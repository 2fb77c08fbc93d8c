//! One section per layer: its settings as a file writes them, checked, and
//! turned into the layer's own types.

#![cfg_attr(
    not(any(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "timeout",
        feature = "bulkhead",
        feature = "retry",
        feature = "hedge",
        feature = "idempotency",
        feature = "adaptive-concurrency",
        feature = "throttle",
        feature = "validate"
    )),
    allow(unused_imports, dead_code)
)]

#[cfg(feature = "rate-limit")]
use std::collections::BTreeMap;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "hedge"
))]
use std::num::NonZeroU32;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "timeout",
    feature = "bulkhead",
    feature = "retry",
    feature = "hedge",
    feature = "idempotency",
    feature = "adaptive-concurrency",
    feature = "throttle"
))]
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;

fn invalid(field: impl Into<String>, reason: impl ToString) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// A rate limit quota: `count` requests per `per`, in bursts of at most
/// `burst` (default: `count`).
///
/// ```toml
/// { count = 100, per = "1m" }
/// { count = 10, per = "1s", burst = 20, name = "api" }
/// ```
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per period (at least 1).
    pub count: NonZeroU32,
    /// The period, such as `"1s"`, `"1m"`, `"1h"`.
    #[serde(with = "super::duration")]
    pub per: Duration,
    /// The largest burst (default: `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
    /// The quota's name in `RateLimit-Policy` (default: the tier's name, or
    /// `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[cfg(feature = "rate-limit")]
impl QuotaConfig {
    /// The quota; `field` names this quota in an error.
    pub fn quota(&self, field: &str) -> Result<crate::rate_limit::Quota, Error> {
        let quota =
            crate::rate_limit::Quota::per_period(self.per, self.count).ok_or_else(|| {
                invalid(
                    format!("{field}.per"),
                    format!(
                        "{:?} for {} requests is not a usable period",
                        self.per, self.count
                    ),
                )
            })?;
        let quota = match self.burst {
            Some(burst) => quota.burst(burst),
            None => quota,
        };
        match &self.name {
            None => Ok(quota),
            Some(name) if crate::rate_limit::is_name(name) => Ok(quota.named(name.clone())),
            Some(name) => Err(invalid(
                format!("{field}.name"),
                format!("{name:?} is not printable ASCII"),
            )),
        }
    }
}

/// A rate limiter's quotas: those of the default tier, and those of each
/// named tier.
///
/// ```toml
/// [rate_limit.api]
/// quotas = [{ count = 100, per = "1m" }]
/// tiers.pro = [{ count = 1000, per = "1m" }]
/// ```
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The default tier's quotas (at least one).
    pub quotas: Vec<QuotaConfig>,
    /// Other tiers by name, each with at least one quota.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, Vec<QuotaConfig>>,
}

#[cfg(feature = "rate-limit")]
impl RateLimitConfig {
    fn quotas_of(
        quotas: &[QuotaConfig],
        field: &str,
    ) -> Result<Vec<crate::rate_limit::Quota>, Error> {
        if quotas.is_empty() {
            return Err(invalid(field, "needs at least one quota"));
        }
        quotas
            .iter()
            .enumerate()
            .map(|(i, q)| q.quota(&format!("{field}[{i}]")))
            .collect()
    }

    /// Checks every quota; `field` names this section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        Self::quotas_of(&self.quotas, &format!("{field}.quotas"))?;
        for (tier, quotas) in &self.tiers {
            Self::quotas_of(quotas, &format!("{field}.tiers.{tier}"))?;
            crate::rate_limit::check_name(tier)
                .map_err(|e| invalid(format!("{field}.tiers"), e))?;
        }
        Ok(())
    }

    /// Puts these quotas in force through a rate limiter's handle: the
    /// default tier's, each tier's, and removes the tiers this section does
    /// not name. Checks everything first: on an error, nothing changed.
    pub fn apply(&self, handle: &crate::rate_limit::Handle, field: &str) -> Result<(), Error> {
        self.validate(field)?;
        let quotas = Self::quotas_of(&self.quotas, &format!("{field}.quotas"))?;
        let tiers = self
            .tiers
            .iter()
            .map(|(name, q)| Ok((name, Self::quotas_of(q, &format!("{field}.tiers.{name}"))?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let reject = |e: crate::rate_limit::InvalidTier| invalid(field, e);
        handle.set_quotas(quotas).map_err(reject)?;
        for (name, quotas) in tiers {
            handle.set_tier(name, quotas).map_err(reject)?;
        }
        for name in handle.tier_names() {
            if !self.tiers.contains_key(&name) {
                handle.remove_tier(&name);
            }
        }
        Ok(())
    }
}

/// A circuit breaker's settings; what is left out keeps
/// [`circuit_breaker::Config`](crate::circuit_breaker::Config)'s default.
/// At most one trip condition: `consecutive_failures`, `count_window` or
/// `time_window`.
///
/// ```toml
/// [circuit_breaker.payment]
/// count_window = 20
/// failure_rate = 0.5
/// open_wait = "30s"
/// ```
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Failures in a row that open the circuit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<NonZeroU32>,
    /// Trip on the failure rate of the last N calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_window: Option<NonZeroU32>,
    /// Trip on the failure rate of the calls of the last period.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub time_window: Option<Duration>,
    /// The buckets of `time_window` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window_buckets: Option<NonZeroU32>,
    /// The failure rate that opens the circuit in a window, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Calls a window holds before its rate counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<NonZeroU32>,
    /// A call slower than this is slow (with `slow_call_rate`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub slow_call: Option<Duration>,
    /// The slow-call rate that opens the circuit, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<f64>,
    /// How long the circuit stays open before probing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub open_wait: Option<Duration>,
    /// Probes let through while half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<NonZeroU32>,
    /// How long a probe may take before it counts as failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub probe_timeout: Option<Duration>,
}

#[cfg(feature = "circuit-breaker")]
impl CircuitBreakerConfig {
    /// The breaker's [`Config`](crate::circuit_breaker::Config), named
    /// `name`; `field` names this section in an error.
    pub fn config(&self, name: &str, field: &str) -> Result<crate::circuit_breaker::Config, Error> {
        self.build(Some(name.into()), field)
    }

    /// The config under the name a running breaker has (`None`: unnamed),
    /// so putting it in force never renames it.
    pub(crate) fn build(
        &self,
        name: Option<std::sync::Arc<str>>,
        field: &str,
    ) -> Result<crate::circuit_breaker::Config, Error> {
        use crate::circuit_breaker::{Config, Rate};

        let rate = |value: f64, at: &str| {
            Rate::new(value).map_err(|e| invalid(format!("{field}.{at}"), e))
        };
        let modes = [
            self.consecutive_failures.is_some(),
            self.count_window.is_some(),
            self.time_window.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(invalid(
                field,
                "consecutive_failures, count_window and time_window are exclusive: choose one",
            ));
        }
        if self.time_window_buckets.is_some() && self.time_window.is_none() {
            return Err(invalid(
                format!("{field}.time_window_buckets"),
                "needs time_window",
            ));
        }
        let mut config = Config::new();
        if let Some(name) = name {
            config = config.name(name);
        }
        if let Some(n) = self.consecutive_failures {
            config = config.consecutive_failures(n);
        }
        if let Some(n) = self.count_window {
            config = config.count_window(n);
        }
        if let Some(length) = self.time_window {
            if length.is_zero() {
                return Err(invalid(
                    format!("{field}.time_window"),
                    "must be longer than zero",
                ));
            }
            let buckets = self
                .time_window_buckets
                .unwrap_or(NonZeroU32::new(10).expect("not zero"));
            config = config.time_window(length, buckets);
        }
        if let Some(value) = self.failure_rate {
            config = config.failure_rate(rate(value, "failure_rate")?);
        }
        if let Some(n) = self.minimum_calls {
            config = config.minimum_calls(n);
        }
        match (self.slow_call, self.slow_call_rate) {
            (Some(duration), Some(value)) => {
                config = config.slow_calls(duration, rate(value, "slow_call_rate")?);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(invalid(
                    format!("{field}.slow_call"),
                    "needs slow_call_rate",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!("{field}.slow_call_rate"),
                    "needs slow_call",
                ));
            }
        }
        if let Some(wait) = self.open_wait {
            config = config.open_wait(wait);
        }
        if let Some(n) = self.half_open_probes {
            config = config.half_open_probes(n);
        }
        if let Some(timeout) = self.probe_timeout {
            config = config.probe_timeout(timeout);
        }
        Ok(config)
    }
}

/// A timeout's settings.
///
/// ```toml
/// [timeout.payment]
/// timeout = "10s"
/// ```
#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// The timeout (the maximum, for a per-request timeout), longer than
    /// zero.
    #[serde(with = "super::duration")]
    pub timeout: Duration,
}

#[cfg(feature = "timeout")]
impl TimeoutConfig {
    /// Checks the timeout; `field` names this section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        if self.timeout.is_zero() {
            return Err(invalid(
                format!("{field}.timeout"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// A bulkhead's settings.
///
/// ```toml
/// [bulkhead.orders]
/// max_in_flight = 7
/// queue = { max_queued = 32, max_wait = "500ms" }
/// ```
#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls in flight at most.
    pub max_in_flight: NonZeroU32,
    /// How calls wait when the bulkhead is full (default: they are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueConfig>,
}

/// A bounded queue: at most `max_queued` waiters, each for at most
/// `max_wait`.
#[cfg(any(feature = "bulkhead", feature = "adaptive-concurrency"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "bulkhead", feature = "adaptive-concurrency")))
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Waiters at most.
    pub max_queued: usize,
    /// How long one waits at most.
    #[serde(with = "super::duration")]
    pub max_wait: Duration,
}

#[cfg(feature = "bulkhead")]
impl BulkheadConfig {
    /// The queue, if any; `field` names this section in an error.
    pub fn queue(&self, field: &str) -> Result<Option<crate::load_shed::Queue>, Error> {
        self.queue
            .as_ref()
            .map(|q| {
                crate::load_shed::Queue::new(q.max_queued, q.max_wait)
                    .map_err(|e| invalid(format!("{field}.queue"), e))
            })
            .transpose()
    }
}

#[cfg(feature = "timeout")]
impl TimeoutConfig {
    /// A [`TimeoutLayer`](crate::timeout::TimeoutLayer) of this timeout,
    /// named `name`; `field` names this section in an error. The layer has
    /// no setter for its timeout, so this builds one: call
    /// [`per_request`](crate::timeout::TimeoutLayer::per_request) on it for
    /// a per-request timeout with this one as the maximum.
    pub fn layer(&self, name: &str, field: &str) -> Result<crate::timeout::TimeoutLayer, Error> {
        self.validate(field)?;
        Ok(crate::timeout::TimeoutLayer::new(self.timeout).name(name.to_owned()))
    }
}

#[cfg(feature = "bulkhead")]
impl BulkheadConfig {
    /// A [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) of these
    /// settings, named `name`, with permits in a new memory store; `field`
    /// names this section in an error. The layer has no setter for its
    /// limit, so this builds one: add a key extractor or a priority to it.
    pub fn layer(&self, name: &str, field: &str) -> Result<crate::bulkhead::BulkheadLayer, Error> {
        let layer = crate::bulkhead::BulkheadLayer::new(self.max_in_flight).name(name.to_owned());
        Ok(match self.queue(field)? {
            Some(queue) => layer.queue(queue),
            None => layer,
        })
    }
}

/// An error of a layer's own check, at `field` and the setting it names.
#[cfg(any(feature = "retry", feature = "hedge", feature = "throttle"))]
fn refused(field: &str, e: crate::attempt::ConfigError) -> Error {
    match e {
        crate::attempt::ConfigError::OutOfRange { field: at, reason } => {
            invalid(format!("{field}.{at}"), format!("must be {reason}"))
        }
        #[allow(unreachable_patterns)]
        e => invalid(field, e),
    }
}

/// A retry's settings; what is left out keeps the layer's value. The
/// classifier and the [`Budget`](crate::attempt::Budget) stay in code: a
/// budget is shared by the layers that call one downstream.
///
/// ```toml
/// [retry.payment]
/// max_attempts = 4
/// backoff = { base = "100ms", max = "2s", jitter = "decorrelated" }
/// per_try_timeout = "1s"
/// max_retry_after = "10s"
/// ```
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The most attempts of one request, the first one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<NonZeroU32>,
    /// The waits between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffConfig>,
    /// A timeout for each attempt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub per_try_timeout: Option<Duration>,
    /// The longest wait a server may ask for.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub max_retry_after: Option<Duration>,
}

/// An exponential backoff from `base` to `max` (`0 < base <= max`), with
/// `jitter` (default `full`).
///
/// ```toml
/// { base = "50ms", max = "2s", jitter = "none" }
/// ```
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// The first wait.
    #[serde(with = "super::duration")]
    pub base: Duration,
    /// The longest wait.
    #[serde(with = "super::duration")]
    pub max: Duration,
    /// The jitter (default `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<JitterConfig>,
}

/// [`Jitter`](crate::retry::Jitter) as a file writes it: `"full"`,
/// `"decorrelated"` or `"none"`.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JitterConfig {
    /// [`Jitter::Full`](crate::retry::Jitter::Full).
    Full,
    /// [`Jitter::Decorrelated`](crate::retry::Jitter::Decorrelated).
    Decorrelated,
    /// [`Jitter::None`](crate::retry::Jitter::None).
    None,
}

#[cfg(feature = "retry")]
impl BackoffConfig {
    /// The backoff; `field` names it in an error.
    pub fn backoff(&self, field: &str) -> Result<crate::retry::Backoff, Error> {
        use crate::retry::{Backoff, Jitter};

        let backoff = Backoff::exponential(self.base, self.max).map_err(|e| refused(field, e))?;
        Ok(match self.jitter {
            None | Some(JitterConfig::Full) => backoff.jitter(Jitter::Full),
            Some(JitterConfig::Decorrelated) => backoff.jitter(Jitter::Decorrelated),
            Some(JitterConfig::None) => backoff.jitter(Jitter::None),
        })
    }
}

#[cfg(feature = "retry")]
impl RetryConfig {
    /// Checks the backoff; `field` names this section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        if let Some(backoff) = &self.backoff {
            backoff.backoff(&format!("{field}.backoff"))?;
        }
        Ok(())
    }

    /// Sets this section's values on `layer` (built with its classifier),
    /// leaving the others as they are; `field` names this section in an
    /// error.
    pub fn apply<C>(
        &self,
        layer: crate::retry::RetryLayer<C>,
        field: &str,
    ) -> Result<crate::retry::RetryLayer<C>, Error> {
        let mut layer = layer;
        if let Some(n) = self.max_attempts {
            layer = layer.max_attempts(n);
        }
        if let Some(backoff) = &self.backoff {
            layer = layer.backoff(backoff.backoff(&format!("{field}.backoff"))?);
        }
        if let Some(timeout) = self.per_try_timeout {
            layer = layer.per_try_timeout(timeout);
        }
        if let Some(max) = self.max_retry_after {
            layer = layer.max_retry_after(max);
        }
        Ok(layer)
    }
}

/// A hedge's settings; what is left out keeps the layer's value. The
/// classifier and the budget stay in code.
///
/// ```toml
/// [hedge.search]
/// percentile = 0.9
/// window = "30s"
/// min_samples = 50
/// min_delay = "20ms"
/// max_hedges = 2
/// ```
#[cfg(feature = "hedge")]
#[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// The latency percentile past which a hedge is sent, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// How long a latency counts, longer than zero.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub window: Option<Duration>,
    /// Latencies the window holds before any hedge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<NonZeroU32>,
    /// The shortest delay before a hedge.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub min_delay: Option<Duration>,
    /// Hedges of one request, at most 16 (0 turns hedging off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hedges: Option<u32>,
}

#[cfg(feature = "hedge")]
impl HedgeConfig {
    /// Checks the values the layer refuses; `field` names this section in
    /// an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        self.apply(crate::hedge::HedgeLayer::new(()), field)
            .map(drop)
    }

    /// Sets this section's values on `layer` (built with its classifier),
    /// leaving the others as they are; `field` names this section in an
    /// error. Take the layer's handle after this: a new percentile, window,
    /// `min_samples` or `min_delay` starts a new window.
    pub fn apply<C>(
        &self,
        layer: crate::hedge::HedgeLayer<C>,
        field: &str,
    ) -> Result<crate::hedge::HedgeLayer<C>, Error> {
        let mut layer = layer;
        if let Some(n) = self.max_hedges {
            if n > 16 {
                return Err(invalid(format!("{field}.max_hedges"), "must be at most 16"));
            }
            layer = layer.max_hedges(n);
        }
        if let Some(p) = self.percentile {
            layer = layer.percentile(p).map_err(|e| refused(field, e))?;
        }
        if let Some(window) = self.window {
            layer = layer.window(window).map_err(|e| refused(field, e))?;
        }
        if let Some(n) = self.min_samples {
            layer = layer.min_samples(n);
        }
        if let Some(delay) = self.min_delay {
            layer = layer.min_delay(delay);
        }
        Ok(layer)
    }
}

/// An idempotency layer's settings; what is left out keeps the layer's
/// value. The store, the caller key and `store_when` stay in code. Out of
/// range durations are refused rather than clamped as the setters do.
///
/// ```toml
/// [idempotency.orders]
/// methods = ["POST"]
/// optional = false
/// fingerprint_headers = ["x-tenant"]
/// fingerprint_mode = "canonical_json"
/// body_limit = 65536
/// ttl = "24h"
/// lease = "10s"
/// request_timeout = "30s"
/// on_cancel = "detach"
/// on_store_error = "fail_closed"
/// wait_for_in_flight = "2s"
/// ```
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// The methods the layer applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Whether a request without a key runs without idempotency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Request headers in the fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_headers: Option<Vec<String>>,
    /// How the body enters the fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_mode: Option<FingerprintModeConfig>,
    /// The largest request body, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<usize>,
    /// The largest response body kept for replay, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body_limit: Option<usize>,
    /// The only response headers kept for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_headers: Option<Vec<String>>,
    /// Whether `Set-Cookie` and the like are replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_session_headers: Option<bool>,
    /// How long a completed record is kept: 1 ms to 365 days.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub ttl: Option<Duration>,
    /// How long a claim holds a key without a sign of life: 100 ms to one
    /// day.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub lease: Option<Duration>,
    /// The stack's request timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub request_timeout: Option<Duration>,
    /// What a cancelled request does to its claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_cancel: Option<OnCancelConfig>,
    /// What a store failure does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreErrorConfig>,
    /// How long a duplicate waits for the request in flight: at most 10
    /// minutes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub wait_for_in_flight: Option<Duration>,
    /// The `Retry-After` of a `409`: at most one hour.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub in_flight_retry_after: Option<Duration>,
}

/// [`FingerprintMode`](crate::idempotency::FingerprintMode) as a file
/// writes it: `"exact"` or `"canonical_json"`.
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FingerprintModeConfig {
    /// The exact body bytes.
    Exact,
    /// The canonical form of a JSON body.
    CanonicalJson,
}

/// [`OnCancel`](crate::idempotency::OnCancel) as a file writes it:
/// `"release"`, `"hold"` or `"detach"`.
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnCancelConfig {
    /// Release the key at once.
    Release,
    /// Keep the key claimed until its lease expires.
    Hold,
    /// Run the request to its end on a task of its own.
    Detach,
}

/// [`OnStoreError`](crate::store::OnStoreError) as a file writes it:
/// `"fail_open"` or `"fail_closed"`.
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnStoreErrorConfig {
    /// Let the request through without the layer.
    FailOpen,
    /// Refuse the request.
    FailClosed,
}

#[cfg(feature = "idempotency")]
fn header_names(names: &[String], field: &str) -> Result<Vec<http::HeaderName>, Error> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                invalid(
                    format!("{field}[{i}]"),
                    format!("{name:?} is not a header name"),
                )
            })
        })
        .collect()
}

#[cfg(feature = "idempotency")]
fn within(
    value: Option<Duration>,
    min: Duration,
    max: Duration,
    field: String,
) -> Result<Option<Duration>, Error> {
    match value {
        Some(d) if d < min || d > max => Err(invalid(
            field,
            format!(
                "{} is not between {} and {}",
                humantime::format_duration(d),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        )),
        _ => Ok(value),
    }
}

#[cfg(feature = "idempotency")]
impl IdempotencyConfig {
    /// Checks methods, header names and durations; `field` names this
    /// section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        self.apply(crate::idempotency::IdempotencyLayer::new(), field)
            .map(drop)
    }

    /// Sets this section's values on `layer` (built with its store and
    /// caller key), leaving the others as they are; `field` names this
    /// section in an error. Checks everything before it sets anything.
    pub fn apply<St, K>(
        &self,
        layer: crate::idempotency::IdempotencyLayer<St, K>,
        field: &str,
    ) -> Result<crate::idempotency::IdempotencyLayer<St, K>, Error> {
        use crate::idempotency::{
            FingerprintMode, MAX_LEASE, MAX_RETRY_AFTER, MAX_TTL, MAX_WAIT, MIN_LEASE, OnCancel,
        };
        use crate::store::OnStoreError;

        let methods = self
            .methods
            .as_deref()
            .map(|methods| {
                methods
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                            invalid(
                                format!("{field}.methods[{i}]"),
                                format!("{m:?} is not a method"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })
            .transpose()?;
        let fingerprint_headers = self
            .fingerprint_headers
            .as_deref()
            .map(|n| header_names(n, &format!("{field}.fingerprint_headers")))
            .transpose()?;
        let stored_headers = self
            .stored_headers
            .as_deref()
            .map(|n| header_names(n, &format!("{field}.stored_headers")))
            .transpose()?;
        let ms = Duration::from_millis(1);
        let ttl = within(self.ttl, ms, MAX_TTL, format!("{field}.ttl"))?;
        let lease = within(self.lease, MIN_LEASE, MAX_LEASE, format!("{field}.lease"))?;
        let wait = within(
            self.wait_for_in_flight,
            Duration::ZERO,
            MAX_WAIT,
            format!("{field}.wait_for_in_flight"),
        )?;
        let retry_after = within(
            self.in_flight_retry_after,
            Duration::ZERO,
            MAX_RETRY_AFTER,
            format!("{field}.in_flight_retry_after"),
        )?;

        let mut layer = layer;
        if let Some(methods) = methods {
            layer = layer.methods(methods);
        }
        if let Some(optional) = self.optional {
            layer = layer.optional(optional);
        }
        if let Some(names) = fingerprint_headers {
            layer = layer.fingerprint_headers(names);
        }
        if let Some(mode) = self.fingerprint_mode {
            layer = layer.fingerprint_mode(match mode {
                FingerprintModeConfig::Exact => FingerprintMode::Exact,
                FingerprintModeConfig::CanonicalJson => FingerprintMode::CanonicalJson,
            });
        }
        if let Some(bytes) = self.body_limit {
            layer = layer.body_limit(bytes);
        }
        if let Some(bytes) = self.response_body_limit {
            layer = layer.response_body_limit(bytes);
        }
        if let Some(names) = stored_headers {
            layer = layer.stored_headers(names);
        }
        if let Some(replay) = self.replay_session_headers {
            layer = layer.replay_session_headers(replay);
        }
        if let Some(ttl) = ttl {
            layer = layer.ttl(ttl);
        }
        if let Some(lease) = lease {
            layer = layer.lease(lease);
        }
        if let Some(timeout) = self.request_timeout {
            layer = layer.request_timeout(timeout);
        }
        if let Some(on_cancel) = self.on_cancel {
            layer = layer.on_cancel(match on_cancel {
                OnCancelConfig::Release => OnCancel::Release,
                OnCancelConfig::Hold => OnCancel::Hold,
                OnCancelConfig::Detach => OnCancel::Detach,
            });
        }
        if let Some(policy) = self.on_store_error {
            layer = layer.on_store_error(match policy {
                OnStoreErrorConfig::FailOpen => OnStoreError::FailOpen,
                OnStoreErrorConfig::FailClosed => OnStoreError::FailClosed,
            });
        }
        if let Some(wait) = wait {
            layer = layer.wait_for_in_flight(wait);
        }
        if let Some(after) = retry_after {
            layer = layer.in_flight_retry_after(after);
        }
        Ok(layer)
    }
}

/// An adaptive concurrency limiter's settings; what is left out keeps the
/// layer's value. The algorithm and its bounds are the layer's
/// constructor's, in code.
///
/// ```toml
/// [adaptive_concurrency.api]
/// queue = { max_queued = 64, max_wait = "100ms" }
/// back_pressure = false
/// retry_after = "1s"
/// ```
#[cfg(feature = "adaptive-concurrency")]
#[cfg_attr(docsrs, doc(cfg(feature = "adaptive-concurrency")))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrencyConfig {
    /// How calls over the limit wait (default: they are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueConfig>,
    /// Whether `poll_ready` reports saturation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_pressure: Option<bool>,
    /// The `Retry-After` of a refusal.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub retry_after: Option<Duration>,
}

#[cfg(feature = "adaptive-concurrency")]
impl AdaptiveConcurrencyConfig {
    fn queue(&self, field: &str) -> Result<Option<crate::load_shed::Queue>, Error> {
        self.queue
            .as_ref()
            .map(|q| {
                crate::load_shed::Queue::new(q.max_queued, q.max_wait)
                    .map_err(|e| invalid(format!("{field}.queue"), e))
            })
            .transpose()
    }

    /// Checks the queue; `field` names this section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        self.queue(field).map(drop)
    }

    /// Sets this section's values on `layer` (built with its algorithm),
    /// leaving the others as they are; `field` names this section in an
    /// error. The queue is the limiter's, shared by the layer's clones.
    pub fn apply<P>(
        &self,
        layer: crate::adaptive_concurrency::AdaptiveConcurrencyLayer<P>,
        field: &str,
    ) -> Result<crate::adaptive_concurrency::AdaptiveConcurrencyLayer<P>, Error> {
        let queue = self.queue(field)?;
        let mut layer = layer;
        if let Some(queue) = queue {
            layer = layer.queue(queue);
        }
        if let Some(on) = self.back_pressure {
            layer = layer.back_pressure(on);
        }
        if let Some(after) = self.retry_after {
            layer = layer.retry_after(after);
        }
        Ok(layer)
    }
}

/// An outbound throttle's settings; what is left out keeps the layer's
/// value.
///
/// ```toml
/// [throttle.partner]
/// max_wait = "30s"
/// pause = "1s"
/// adaptive = { k = 2.0, window = "2m" }
/// ```
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// The longest a call waits for the upstream.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub max_wait: Option<Duration>,
    /// The first pause after a `429` without `Retry-After`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub pause: Option<Duration>,
    /// The SRE book's adaptive throttle (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveThrottleConfig>,
}

/// An [`AdaptiveThrottle`](crate::throttle::AdaptiveThrottle): `k` at least
/// 1 (default 2), counts over `window` (default 2 minutes, at least a
/// second).
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveThrottleConfig {
    /// The multiplier of accepted calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    /// How long the counts cover.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::duration::option"
    )]
    pub window: Option<Duration>,
}

#[cfg(feature = "throttle")]
impl AdaptiveThrottleConfig {
    /// The adaptive throttle; `field` names it in an error.
    pub fn adaptive(&self, field: &str) -> Result<crate::throttle::AdaptiveThrottle, Error> {
        let adaptive =
            crate::throttle::AdaptiveThrottle::new(self.k.unwrap_or(crate::throttle::DEFAULT_K))
                .map_err(|e| refused(field, e))?;
        Ok(match self.window {
            Some(window) => adaptive.window(window),
            None => adaptive,
        })
    }
}

#[cfg(feature = "throttle")]
impl ThrottleConfig {
    /// Checks the adaptive throttle; `field` names this section in an
    /// error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        if let Some(adaptive) = &self.adaptive {
            adaptive.adaptive(&format!("{field}.adaptive"))?;
        }
        Ok(())
    }

    /// Sets this section's values on `layer`, leaving the others as they
    /// are; `field` names this section in an error. Each value set starts
    /// a new schedule, as the setters do.
    pub fn apply(
        &self,
        layer: crate::throttle::ThrottleLayer,
        field: &str,
    ) -> Result<crate::throttle::ThrottleLayer, Error> {
        let adaptive = self
            .adaptive
            .as_ref()
            .map(|a| a.adaptive(&format!("{field}.adaptive")))
            .transpose()?;
        let mut layer = layer;
        if let Some(max_wait) = self.max_wait {
            layer = layer.max_wait(max_wait);
        }
        if let Some(pause) = self.pause {
            layer = layer.pause(pause);
        }
        if let Some(adaptive) = adaptive {
            layer = layer.adaptive(adaptive);
        }
        Ok(layer)
    }
}

/// A request validator's settings; what is left out keeps the layer's
/// value. The body type and header checks stay in code.
///
/// ```toml
/// [validate.orders]
/// content_types = ["application/json"]
/// produces = ["application/json"]
/// body_limit = 65536
/// unknown_fields = "reject"
/// max_errors = 20
/// ```
#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The media types a request body may have (`type/subtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_types: Option<Vec<String>>,
    /// The media types the route produces (`type/subtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produces: Option<Vec<String>>,
    /// The largest body, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<usize>,
    /// Whether unknown JSON members are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_fields: Option<UnknownFieldsConfig>,
    /// Violations a `422` lists at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<std::num::NonZeroUsize>,
}

/// [`UnknownFields`](crate::validate::UnknownFields) as a file writes it:
/// `"reject"` or `"allow"`.
#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownFieldsConfig {
    /// Every unknown member is a violation.
    Reject,
    /// Unknown members are ignored.
    Allow,
}

#[cfg(feature = "validate")]
fn media_types(types: &[String], field: &str) -> Result<(), Error> {
    for (i, t) in types.iter().enumerate() {
        if t.parse::<mime::Mime>().is_err() {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("{t:?} is not a media type (type/subtype)"),
            ));
        }
    }
    Ok(())
}

#[cfg(feature = "validate")]
impl ValidateConfig {
    /// Checks the media types, which the layer's setters panic on; `field`
    /// names this section in an error.
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        if let Some(types) = &self.content_types {
            media_types(types, &format!("{field}.content_types"))?;
        }
        if let Some(types) = &self.produces {
            media_types(types, &format!("{field}.produces"))?;
        }
        Ok(())
    }

    /// Sets this section's values on `layer` (built with its body type and
    /// header checks), leaving the others as they are; `field` names this
    /// section in an error.
    pub fn apply<M>(
        &self,
        layer: crate::validate::ValidateLayer<M>,
        field: &str,
    ) -> Result<crate::validate::ValidateLayer<M>, Error> {
        self.validate(field)?;
        let mut layer = layer;
        if let Some(types) = &self.content_types {
            layer = layer.content_types(types);
        }
        if let Some(types) = &self.produces {
            layer = layer.produces(types);
        }
        if let Some(bytes) = self.body_limit {
            layer = layer.body_limit(bytes);
        }
        if let Some(policy) = self.unknown_fields {
            layer = layer.unknown_fields(match policy {
                UnknownFieldsConfig::Reject => crate::validate::UnknownFields::Reject,
                UnknownFieldsConfig::Allow => crate::validate::UnknownFields::Allow,
            });
        }
        if let Some(max) = self.max_errors {
            layer = layer.max_errors(max);
        }
        Ok(layer)
    }
}
