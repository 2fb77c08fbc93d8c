//! The `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10 (the structured-field syntax that
//! draft -09 introduced and -10 keeps): all the header text the rate limiter
//! writes. `Retry-After` comes from [`crate::problem`].
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=60
//! RateLimit: "default";r=50;t=30
//! ```
//!
//! For a GCRA quota, `q` is the burst (the cells the bucket holds) and `w`
//! the time an empty bucket takes to fill, in whole seconds rounded up; `r`
//! is the cells left in the binding quota and `t` the seconds, rounded up,
//! until it is full again.

use std::fmt::Write;
use std::time::Duration;

use super::decision::Decision;
use super::limits::Limits;

/// What the layer adds to an allowed response. [`NoHeaders`] (the default)
/// adds nothing, so any service can be limited; `RateLimitHeaders` (feature
/// `http`) adds the `RateLimit-Policy` and `RateLimit` fields.
pub trait ResponseHeaders<R>: Clone + Send + Sync + 'static {
    /// Whether [`apply`](Self::apply) adds anything: when `false`, the layer
    /// keeps no decision for the response.
    const APPLIES: bool = true;

    /// Adds what this decision tells the client to `response`.
    fn apply(&self, response: &mut R, limits: &Limits, decision: &Decision);
}

/// Adds nothing to responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl<R> ResponseHeaders<R> for NoHeaders {
    const APPLIES: bool = false;

    fn apply(&self, _: &mut R, _: &Limits, _: &Decision) {}
}

/// Adds `RateLimit-Policy` and `RateLimit` to allowed HTTP responses (a
/// 429 carries them as well, with `Retry-After`).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimitHeaders;

#[cfg(feature = "http")]
impl<B: Send + 'static> ResponseHeaders<http::Response<B>> for RateLimitHeaders {
    fn apply(&self, response: &mut http::Response<B>, limits: &Limits, decision: &Decision) {
        let headers = response.headers_mut();
        if let Ok(v) = http::HeaderValue::from_str(limits.policy_field()) {
            headers.insert(RATELIMIT_POLICY, v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&ratelimit_field(limits, decision)) {
            headers.insert(RATELIMIT, v);
        }
    }
}

/// The `RateLimit-Policy` header name.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");

/// The `RateLimit` header name.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` value of `limits`: one item per quota.
pub(crate) fn policy_field(limits: &Limits) -> String {
    let mut out = String::new();
    for (i, quota) in limits.quotas().iter().enumerate() {
        if !out.is_empty() {
            out.push_str(", ");
        }
        push_sf_string(&mut out, limits.name(i));
        let _ = write!(
            out,
            ";q={};w={}",
            quota.max_burst(),
            whole_seconds(quota.window()).max(1)
        );
    }
    out
}

/// The `RateLimit` value of a decision: its binding quota's state.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn ratelimit_field(limits: &Limits, decision: &Decision) -> String {
    let mut out = String::with_capacity(32);
    push_sf_string(&mut out, limits.name(decision.quota()));
    let _ = write!(
        out,
        ";r={};t={}",
        decision.remaining(),
        whole_seconds(decision.reset())
    );
    out
}

// Rounded up as `problem::retry_after_seconds`, without its floor of 1
// (`t=0` is a valid reset), and saturating for a window of centuries.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::rate_limit::Quota;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn policy_items_follow_the_structured_field_syntax() {
        let limits = Limits::new([
            Quota::per_minute(nz(100)),
            Quota::per_second(nz(10)).burst(nz(5)).named("a\"b"),
        ]);
        assert_eq!(
            limits.policy_field(),
            r#""default";q=100;w=60, "a\"b";q=5;w=1"#
        );
    }

    #[test]
    fn the_ratelimit_field_names_the_binding_quota_and_rounds_seconds_up() {
        let limits = Limits::new([Quota::per_minute(nz(2)), Quota::per_hour(nz(10)).named("h")]);
        let d = Decision::allowed(1, 7, Duration::from_millis(2001));
        assert_eq!(ratelimit_field(&limits, &d), r#""h";r=7;t=3"#);
        let d = Decision::allowed(0, 1, Duration::ZERO);
        assert_eq!(ratelimit_field(&limits, &d), r#""default";r=1;t=0"#);
    }
}
