//! One section per layer: its settings as a file writes them, checked, and
//! turned into the layer's own types.

#![cfg_attr(
    not(any(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "timeout",
        feature = "bulkhead"
    )),
    allow(unused_imports, dead_code)
)]

#[cfg(feature = "rate-limit")]
use std::collections::BTreeMap;
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "bulkhead"
))]
use std::num::NonZeroU32;
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
            Some(name) if !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                Ok(quota.named(name.clone()))
            }
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
            if tier.is_empty()
                || tier.len() > 64
                || !tier.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(invalid(
                    format!("{field}.tiers"),
                    format!("tier name {tier:?} is not 1 to 64 printable ASCII characters"),
                ));
            }
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
#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
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
