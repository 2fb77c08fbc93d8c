//! Durations in a config file as people write them: `"250ms"`, `"30s"`,
//! `"1m 30s"` (parsed and printed by `humantime`).

#![cfg_attr(
    not(any(
        feature = "rate-limit",
        feature = "timeout",
        feature = "bulkhead",
        feature = "retry",
        feature = "adaptive-concurrency"
    )),
    allow(dead_code)
)]

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration such as \"250ms\", \"30s\" or \"1m 30s\" ({e})"
        ))
    })
}

/// The same for an optional duration.
#[cfg(any(
    feature = "circuit-breaker",
    feature = "retry",
    feature = "hedge",
    feature = "idempotency",
    feature = "adaptive-concurrency",
    feature = "throttle"
))]
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
