//! Layers built and changed from one TOML file, with environment overrides,
//! reloaded on `SIGHUP` or when the file changes.
//!
//! A [`Config`] has one section per layer, by the name the layer has in its
//! metrics (`.name(..)`): `[rate_limit.api]`, `[circuit_breaker.payment]`,
//! `[timeout.payment]`, `[bulkhead.orders]`, `[retry.payment]`,
//! `[hedge.search]`, `[idempotency.orders]`, `[adaptive_concurrency.api]`,
//! `[throttle.partner]`, `[validate.orders]`. Durations are written as
//! people write them (`"250ms"`, `"30s"`, `"1m 30s"`).
//!
//! ```toml
//! [rate_limit.api]
//! quotas = [{ count = 100, per = "1m" }]
//! tiers.pro = [{ count = 1000, per = "1m" }]
//!
//! [circuit_breaker.payment]
//! consecutive_failures = 5
//! open_wait = "30s"
//!
//! [timeout.payment]
//! timeout = "10s"
//!
//! [bulkhead.orders]
//! max_in_flight = 7
//! queue = { max_queued = 32, max_wait = "500ms" }
//!
//! [retry.payment]
//! max_attempts = 4
//! backoff = { base = "100ms", max = "2s", jitter = "full" }
//! ```
//!
//! Sections of layers that hold code (a classifier, a store, a body type)
//! set their plain values on a layer built in code: `apply` on the
//! section, such as `RetryConfig::apply`. Those of retry, hedge,
//! idempotency, adaptive concurrency, throttle and validate are read at the
//! start: [`Reloader`] logs a change to one (`retry.payment changes at the
//! next start only`) and puts the rest in force.
//!
//! An environment variable overrides one value of the file: with the prefix
//! `PALISADE`, `PALISADE__TIMEOUT__PAYMENT__TIMEOUT=5s` sets
//! `timeout.payment.timeout` (the path in lower case, `__` between its
//! parts; the value read as TOML when it parses as a number, a boolean, an
//! array or an inline table, and as a string otherwise).
//!
//! Every error names the field and the reason, such as
//! `rate_limit.api.quotas[0].count: invalid value: integer 0, expected a
//! nonzero u32`, and a file that has one changes nothing.
//!
//! [`Handles`] holds the handles of a running stack's layers, by name, and
//! [`Handles::apply`] puts a config in force through them: checked whole
//! first, then applied from the next request on, without dropping any.
//! [`Reloader`] does it when the file changes or on `SIGHUP`, and keeps the
//! config in force when the new one is refused (logged at `WARN`, counted in
//! `palisade_config_reloads_total{outcome="refused"}`).
//!
//! ```
//! use palisade::config::Config;
//!
//! let config = Config::from_toml(r#"
//!     [rate_limit.api]
//!     quotas = [{ count = 100, per = "1m" }]
//! "#).unwrap();
//! assert_eq!(config.rate_limit["api"].quotas[0].count.get(), 100);
//!
//! let err = Config::from_toml(r#"
//!     [rate_limit.api]
//!     quotas = [{ count = 0, per = "1m" }]
//! "#).unwrap_err();
//! assert!(err.to_string().starts_with("rate_limit.api.quotas[0].count: "), "{err}");
//! ```

mod duration;
mod env;
mod layers;
mod reload;

#[cfg(any(
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
))]
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "adaptive-concurrency")]
pub use self::layers::AdaptiveConcurrencyConfig;
#[cfg(feature = "bulkhead")]
pub use self::layers::BulkheadConfig;
#[cfg(feature = "circuit-breaker")]
pub use self::layers::CircuitBreakerConfig;
#[cfg(feature = "hedge")]
pub use self::layers::HedgeConfig;
#[cfg(any(feature = "bulkhead", feature = "adaptive-concurrency"))]
pub use self::layers::QueueConfig;
#[cfg(feature = "timeout")]
pub use self::layers::TimeoutConfig;
#[cfg(feature = "throttle")]
pub use self::layers::{AdaptiveThrottleConfig, ThrottleConfig};
#[cfg(feature = "retry")]
pub use self::layers::{BackoffConfig, JitterConfig, RetryConfig};
#[cfg(feature = "idempotency")]
pub use self::layers::{
    FingerprintModeConfig, IdempotencyConfig, OnCancelConfig, OnStoreErrorConfig,
};
#[cfg(feature = "rate-limit")]
pub use self::layers::{QuotaConfig, RateLimitConfig};
#[cfg(feature = "validate")]
pub use self::layers::{UnknownFieldsConfig, ValidateConfig};
pub use self::reload::{DEFAULT_POLL_INTERVAL, Handles, Reloader};

/// The settings of a stack's layers, by layer name. Sections of layers
/// whose feature is off are refused as unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Rate limiters by name.
    #[cfg(feature = "rate-limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limit: BTreeMap<String, RateLimitConfig>,
    /// Circuit breakers by name.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub circuit_breaker: BTreeMap<String, CircuitBreakerConfig>,
    /// Timeouts by name.
    #[cfg(feature = "timeout")]
    #[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeout: BTreeMap<String, TimeoutConfig>,
    /// Bulkheads by name.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bulkhead: BTreeMap<String, BulkheadConfig>,
    /// Retries by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retry: BTreeMap<String, RetryConfig>,
    /// Hedges by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "hedge")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hedge: BTreeMap<String, HedgeConfig>,
    /// Idempotency layers by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "idempotency")]
    #[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub idempotency: BTreeMap<String, IdempotencyConfig>,
    /// Adaptive concurrency limiters by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "adaptive-concurrency")]
    #[cfg_attr(docsrs, doc(cfg(feature = "adaptive-concurrency")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adaptive_concurrency: BTreeMap<String, AdaptiveConcurrencyConfig>,
    /// Outbound throttles by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "throttle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub throttle: BTreeMap<String, ThrottleConfig>,
    /// Request validators by name (read at the start: a reload that changes one
    /// is logged, and takes effect at the next start).
    #[cfg(feature = "validate")]
    #[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validate: BTreeMap<String, ValidateConfig>,
}

/// Why a config was refused. Each names what it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or a value has the wrong type or range.
    #[error("{field}: {reason}")]
    Parse {
        /// The field's path, such as `rate_limit.api.quotas[0].count`
        /// (empty for a syntax error, whose reason gives the line).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is well-formed but not usable (such as two trip conditions
    /// for one breaker), or names a layer the stack does not have.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment override could not be used.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads a config from TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        Self::from_toml_with_env(text, "", std::iter::empty::<(String, String)>())
    }

    /// Reads a config from TOML text, overridden by the variables of `vars`
    /// that start with `prefix` and `__` (see the [module docs](self)), and
    /// checks it. Pass `std::env::vars()` for the process's environment.
    pub fn from_toml_with_env<K, V>(
        text: &str,
        prefix: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, Error>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Parse {
            field: String::new(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        if !prefix.is_empty() {
            env::apply(&mut table, prefix, vars)?;
        }
        let config: Self =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                // toml adds where the value is, which the path already says.
                let reason = e.inner().to_string();
                let reason = reason.split("\nin `").next().unwrap_or_default();
                Error::Parse {
                    field: e.path().to_string(),
                    reason: reason.trim_end().to_owned(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and checks the config in the file at `path`, overridden by the
    /// process's environment variables that start with `env_prefix` (none
    /// when it is empty).
    pub fn load(path: impl AsRef<std::path::Path>, env_prefix: &str) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_with_env(&text, env_prefix, std::env::vars())
    }

    /// Checks what the types cannot: exclusive settings, rates in range,
    /// queues that can serve.
    pub fn validate(&self) -> Result<(), Error> {
        #[cfg(feature = "rate-limit")]
        for (name, section) in &self.rate_limit {
            section.validate(&format!("rate_limit.{name}"))?;
        }
        #[cfg(feature = "circuit-breaker")]
        for (name, section) in &self.circuit_breaker {
            section.config(name, &format!("circuit_breaker.{name}"))?;
        }
        #[cfg(feature = "timeout")]
        for (name, section) in &self.timeout {
            section.validate(&format!("timeout.{name}"))?;
        }
        #[cfg(feature = "bulkhead")]
        for (name, section) in &self.bulkhead {
            section.queue(&format!("bulkhead.{name}"))?;
        }
        #[cfg(feature = "retry")]
        for (name, section) in &self.retry {
            section.validate(&format!("retry.{name}"))?;
        }
        #[cfg(feature = "hedge")]
        for (name, section) in &self.hedge {
            section.validate(&format!("hedge.{name}"))?;
        }
        #[cfg(feature = "idempotency")]
        for (name, section) in &self.idempotency {
            section.validate(&format!("idempotency.{name}"))?;
        }
        #[cfg(feature = "adaptive-concurrency")]
        for (name, section) in &self.adaptive_concurrency {
            section.validate(&format!("adaptive_concurrency.{name}"))?;
        }
        #[cfg(feature = "throttle")]
        for (name, section) in &self.throttle {
            section.validate(&format!("throttle.{name}"))?;
        }
        #[cfg(feature = "validate")]
        for (name, section) in &self.validate {
            section.validate(&format!("validate.{name}"))?;
        }
        Ok(())
    }
}
