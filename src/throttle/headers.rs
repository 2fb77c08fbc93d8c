//! What a response tells the throttle: a refusal, `Retry-After`, and the
//! rate-limit fields of the IETF draft and its older forms.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Response, StatusCode};

use crate::attempt::{GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, retry_after};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A reset this large is a Unix time, not a delay: `X-RateLimit-Reset` is
/// either, depending on the API (GitHub's is a Unix time). 10^9 seconds is
/// thirty years as a delay and 2001 as a date.
const UNIX_TIME_FLOOR: u64 = 1_000_000_000;

/// The upstream's quota right now: `remaining` more calls before `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

/// The upstream's quota policy: `quota` calls per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) quota: u64,
    pub(crate) window: Duration,
}

/// What one response says about when to send the next call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    /// `429 Too Many Requests`.
    pub(crate) too_many: bool,
    /// `429`, `503`, or a gRPC `RESOURCE_EXHAUSTED` (8) or `UNAVAILABLE`
    /// (14) in the headers: the upstream refused for load.
    pub(crate) refused: bool,
    /// The `Retry-After` of a refusal.
    pub(crate) retry_after: Option<Duration>,
    /// The most restrictive quota the response announces.
    pub(crate) quota: Option<Quota>,
    /// The most restrictive policy the response announces.
    pub(crate) policy: Option<Policy>,
    /// Whether the upstream accepted the call, for the adaptive throttle:
    /// not refused by status nor by a gRPC `RESOURCE_EXHAUSTED` (8) or
    /// `UNAVAILABLE` (14).
    pub(crate) accepted: bool,
}

impl Signals {
    /// Reads `response`. Never fails: a malformed field is ignored.
    pub(crate) fn read<B>(response: &Response<B>) -> Self {
        let status = response.status();
        let headers = response.headers();
        let too_many = status == StatusCode::TOO_MANY_REQUESTS;
        let refused = too_many || status == StatusCode::SERVICE_UNAVAILABLE;
        if headers.is_empty() {
            return Self {
                too_many,
                refused,
                accepted: !refused,
                ..Self::default()
            };
        }
        let grpc_refused = matches!(
            headers.get(GRPC_STATUS).map(|v| v.as_bytes()),
            Some(b"8" | b"14")
        );
        // A gRPC refusal for load is a refusal too; its pushback (whole
        // milliseconds) is its `Retry-After`. A negative or malformed one
        // asks not to be retried: nothing to pace by.
        let retry_after = if refused {
            retry_after(headers)
        } else if grpc_refused {
            headers
                .get(GRPC_RETRY_PUSHBACK_MS)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(Duration::from_millis)
        } else {
            None
        };
        Self {
            too_many,
            refused: refused || grpc_refused,
            retry_after,
            quota: quota(headers),
            policy: list_field(headers, &RATELIMIT_POLICY).and_then(|v| policy(&v)),
            accepted: !refused && !grpc_refused,
        }
    }
}

/// The quota of `RateLimit` (either draft form), else of the separate
/// `RateLimit-Remaining`/`RateLimit-Reset` fields, else of the `X-` ones.
fn quota(headers: &HeaderMap) -> Option<Quota> {
    if let Some(value) = list_field(headers, &RATELIMIT)
        && let Some(q) = ratelimit(&value)
    {
        return Some(q);
    }
    let pair = |remaining: &HeaderName, reset: &HeaderName| -> Option<Quota> {
        let remaining = first_number(headers.get(remaining)?.as_bytes())?;
        let reset = first_number(headers.get(reset)?.as_bytes())?;
        Some(Quota {
            remaining: remaining.whole()?,
            reset: reset.delay()?,
        })
    };
    pair(&RATELIMIT_REMAINING, &RATELIMIT_RESET)
        .or_else(|| pair(&X_RATELIMIT_REMAINING, &X_RATELIMIT_RESET))
}

/// A list field's value, its field lines joined as RFC 8941 asks: a
/// policy in a second line counts as much as one in the first. Borrowed
/// for one line (the common case); more lines than a field may have
/// members are refused whole.
fn list_field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for (n, line) in std::iter::once(second).chain(lines).enumerate() {
        if n + 2 > MAX_MEMBERS {
            return None;
        }
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(line.as_bytes());
    }
    Some(Cow::Owned(joined))
}

/// `RateLimit`: the current draft's list (`"default";r=50;t=30`, several
/// policies allowed: the most restrictive wins), or draft 07's dictionary
/// (`limit=100, remaining=50, reset=30`).
fn ratelimit(value: &[u8]) -> Option<Quota> {
    let members = parse_list(value)?;
    let mut best: Option<Quota> = None;
    let mut legacy = (None, None);
    for member in &members {
        match member.key {
            Some("remaining") => legacy.0 = member.value.whole(),
            Some("reset") => legacy.1 = member.value.delay(),
            Some(_) => {}
            None => {
                let (Some(r), Some(t)) = (member.param("r"), member.param("t")) else {
                    continue;
                };
                let (Some(remaining), Some(reset)) = (r.whole(), t.delay()) else {
                    continue;
                };
                let quota = Quota { remaining, reset };
                if best.is_none_or(|b| stricter(quota, b)) {
                    best = Some(quota);
                }
            }
        }
    }
    if let (Some(remaining), Some(reset)) = legacy {
        let quota = Quota { remaining, reset };
        if best.is_none_or(|b| stricter(quota, b)) {
            best = Some(quota);
        }
    }
    best
}

/// Whether `a` allows fewer calls per second than `b`: `a.remaining /
/// a.reset < b.remaining / b.reset`, by cross-multiplication (no division,
/// no float); with none left, the longer wait.
fn stricter(a: Quota, b: Quota) -> bool {
    match (a.remaining, b.remaining) {
        (0, 0) => a.reset > b.reset,
        (0, _) => true,
        (_, 0) => false,
        (ra, rb) => u128::from(ra) * b.reset.as_millis() < u128::from(rb) * a.reset.as_millis(),
    }
}

/// `RateLimit-Policy`: the current draft's list (`"default";q=100;w=60`),
/// or draft 07's (`100;w=60`); the policy allowing the fewest calls per
/// second wins.
fn policy(value: &[u8]) -> Option<Policy> {
    let members = parse_list(value)?;
    let mut best: Option<Policy> = None;
    for member in members.iter().filter(|m| m.key.is_none()) {
        let quota = member
            .param("q")
            .or(match member.value {
                Value::Int(_) => Some(member.value),
                _ => None,
            })
            .and_then(Value::whole);
        let (Some(quota), Some(window)) = (quota, member.param("w").and_then(Value::delay)) else {
            continue;
        };
        if quota == 0 || window.is_zero() {
            continue;
        }
        let policy = Policy { quota, window };
        if best.is_none_or(|b| {
            u128::from(b.quota) * policy.window.as_millis()
                > u128::from(policy.quota) * b.window.as_millis()
        }) {
            best = Some(policy);
        }
    }
    best
}

/// The leading number of a field such as `RateLimit-Remaining: 50` or
/// draft 06's `RateLimit-Limit: 100, 100;w=60`.
fn first_number(value: &[u8]) -> Option<Value> {
    let members = parse_list(value)?;
    match members.first()?.value {
        v @ (Value::Int(_) | Value::Dec(_)) if members.first()?.key.is_none() => Some(v),
        _ => None,
    }
}

/// A structured-field bare item, reduced to what the throttle reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    /// A decimal, in thousandths (RFC 8941 allows three fractional digits).
    Dec(i64),
    /// A string, token, byte sequence, boolean or inner list: read, unused.
    Other,
}

impl Value {
    /// A count: a non-negative integer.
    fn whole(self) -> Option<u64> {
        match self {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// A delay in seconds: a non-negative integer or decimal. A Unix time
    /// (see [`UNIX_TIME_FLOOR`]), with or without a fraction, becomes the
    /// delay until it.
    fn delay(self) -> Option<Duration> {
        let delay = match self {
            Value::Int(n) => Duration::from_secs(u64::try_from(n).ok()?),
            Value::Dec(milli) => Duration::from_millis(u64::try_from(milli).ok()?),
            Value::Other => return None,
        };
        if delay.as_secs() >= UNIX_TIME_FLOOR {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            return Some(delay.saturating_sub(now));
        }
        Some(delay)
    }
}

/// One member of a list or dictionary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member<'a> {
    /// The dictionary key, `None` for a list member.
    pub(crate) key: Option<&'a str>,
    pub(crate) value: Value,
    pub(crate) params: Vec<(&'a str, Value)>,
}

impl Member<'_> {
    fn param(&self, name: &str) -> Option<Value> {
        // The last one wins, as RFC 8941 says of duplicate keys.
        self.params
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|&(_, v)| v)
    }
}

/// More members than any real field has: a longer field is refused whole
/// rather than parsed at the upstream's pace.
const MAX_MEMBERS: usize = 32;
const MAX_PARAMS: usize = 16;

/// Parses a field as an RFC 8941 list whose members may also be dictionary
/// members (`key=value`), so one parser reads both draft forms. Any syntax
/// error refuses the whole field, as RFC 8941 asks; `None` then.
pub(crate) fn parse_list(input: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut p = Parser { input, pos: 0 };
    let mut members = Vec::new();
    p.skip_ows();
    if p.at_end() {
        return None;
    }
    loop {
        if members.len() == MAX_MEMBERS {
            return None;
        }
        members.push(p.member()?);
        p.skip_ows();
        if p.at_end() {
            return Some(members);
        }
        if p.next()? != b',' {
            return None;
        }
        p.skip_ows();
        if p.at_end() {
            return None; // a trailing comma
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn member(&mut self) -> Option<Member<'a>> {
        // A key and a token both start with a lowercase letter or `*`: a
        // following `=` makes it a dictionary key.
        let start = self.pos;
        let mut key = None;
        if matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
            let k = self.key()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                key = Some(k);
            } else {
                // A token, read again below.
                self.pos = start;
            }
        }
        let value = if self.peek() == Some(b'(') {
            self.inner_list()?
        } else {
            self.bare_item()?
        };
        let params = self.params()?;
        Some(Member { key, value, params })
    }

    fn key(&mut self) -> Option<&'a str> {
        let start = self.pos;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.pos += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.pos += 1;
        }
        // ASCII only, so always UTF-8.
        std::str::from_utf8(&self.input[start..self.pos]).ok()
    }

    fn params(&mut self) -> Option<Vec<(&'a str, Value)>> {
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?
            } else {
                Value::Other // `true`
            };
            if params.len() == MAX_PARAMS {
                return None;
            }
            params.push((key, value));
        }
        Some(params)
    }

    fn inner_list(&mut self) -> Option<Value> {
        self.pos += 1; // `(`
        loop {
            self.skip_sp();
            if self.peek()? == b')' {
                self.pos += 1;
                return Some(Value::Other);
            }
            self.bare_item()?;
            self.params()?;
            match self.peek()? {
                b' ' | b')' => {}
                _ => return None,
            }
        }
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.byte_sequence(),
            b'?' => {
                self.pos += 1;
                match self.next()? {
                    b'0' | b'1' => Some(Value::Other),
                    _ => None,
                }
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => {
                self.pos += 1;
                while matches!(self.peek(), Some(b) if is_tchar(b) || b == b':' || b == b'/') {
                    self.pos += 1;
                }
                Some(Value::Other)
            }
            _ => None,
        }
    }

    /// An integer (at most 15 digits) or a decimal (at most 12 integer and
    /// 3 fractional digits), as RFC 8941 bounds them: no overflow possible.
    fn number(&mut self) -> Option<Value> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut int: i64 = 0;
        let mut digits = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            digits += 1;
            if digits > 15 {
                return None;
            }
            int = int * 10 + i64::from(b - b'0');
        }
        if digits == 0 {
            return None;
        }
        let sign = if negative { -1 } else { 1 };
        if self.peek() != Some(b'.') {
            return Some(Value::Int(sign * int));
        }
        if digits > 12 {
            return None;
        }
        self.pos += 1;
        let mut frac = 0;
        let mut frac_digits = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            frac_digits += 1;
            if frac_digits > 3 {
                return None;
            }
            frac = frac * 10 + i64::from(b - b'0');
        }
        if frac_digits == 0 {
            return None;
        }
        let milli = int * 1000 + frac * 10_i64.pow(3 - frac_digits);
        Some(Value::Dec(sign * milli))
    }

    fn string(&mut self) -> Option<Value> {
        self.pos += 1; // `"`
        loop {
            match self.next()? {
                b'"' => return Some(Value::Other),
                b'\\' => match self.next()? {
                    b'"' | b'\\' => {}
                    _ => return None,
                },
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }

    fn byte_sequence(&mut self) -> Option<Value> {
        self.pos += 1; // `:`
        loop {
            match self.next()? {
                b':' => return Some(Value::Other),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {}
                _ => return None,
            }
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn reads_the_current_draft_and_picks_the_strictest_policy() {
        let s = Signals::read(&response(
            200,
            &[
                ("ratelimit", r#""burst";r=50;t=30, "daily";r=2;t=10"#),
                (
                    "ratelimit-policy",
                    r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
                ),
            ],
        ));
        assert_eq!(
            s.quota,
            Some(Quota {
                remaining: 2,
                reset: secs(10)
            })
        );
        assert_eq!(
            s.policy,
            Some(Policy {
                quota: 1000,
                window: secs(86400)
            })
        );
        assert!(s.accepted && !s.refused);
        let none_left = ratelimit(br#""a";r=5;t=1, "b";r=0;t=7, "c";r=0;t=3"#);
        assert_eq!(
            none_left,
            Some(Quota {
                remaining: 0,
                reset: secs(7)
            })
        );
    }

    #[test]
    fn reads_the_older_forms() {
        let dict = response(200, &[("ratelimit", "limit=100, remaining=0, reset=5")]);
        assert_eq!(
            Signals::read(&dict).quota,
            Some(Quota {
                remaining: 0,
                reset: secs(5)
            })
        );
        let separate = response(
            200,
            &[
                ("ratelimit-limit", "100, 100;w=60"),
                ("ratelimit-remaining", "3"),
                ("ratelimit-reset", "12"),
            ],
        );
        assert_eq!(
            Signals::read(&separate).quota,
            Some(Quota {
                remaining: 3,
                reset: secs(12)
            })
        );
        let x = response(
            200,
            &[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "2.5")],
        );
        assert_eq!(
            Signals::read(&x).quota,
            Some(Quota {
                remaining: 1,
                reset: Duration::from_millis(2500)
            })
        );
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let github = response(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &epoch.to_string()),
            ],
        );
        let reset = Signals::read(&github).quota.unwrap().reset;
        assert!(reset > secs(55) && reset <= secs(60), "{reset:?}");
        assert_eq!(
            policy(b"100;w=60"),
            Some(Policy {
                quota: 100,
                window: secs(60)
            })
        );
    }

    #[test]
    fn refusals_and_grpc_statuses() {
        let s = Signals::read(&response(429, &[("retry-after", "3")]));
        assert!(s.too_many && s.refused && !s.accepted);
        assert_eq!(s.retry_after, Some(secs(3)));
        let s = Signals::read(&response(503, &[]));
        assert!(!s.too_many && s.refused && s.retry_after.is_none());
        let s = Signals::read(&response(200, &[("retry-after", "3")]));
        assert!(s.accepted && s.retry_after.is_none(), "only a refusal's");
        let s = Signals::read(&response(200, &[("grpc-status", "8")]));
        assert!(s.refused && !s.accepted && !s.too_many && s.retry_after.is_none());
        let s = Signals::read(&response(
            200,
            &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1500")],
        ));
        assert_eq!(s.retry_after, Some(Duration::from_millis(1500)));
        let s = Signals::read(&response(
            200,
            &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")],
        ));
        assert!(s.refused && s.retry_after.is_none());
        assert!(Signals::read(&response(200, &[("grpc-status", "5")])).accepted);
    }

    #[test]
    fn malformed_fields_are_refused_whole() {
        for bad in [
            "",
            " ",
            r#""a";r=5;t=1,"#,
            r#""a";r=5;t=1 x"#,
            r#""a;r=5;t=1"#,
            r#""a";r=1234567890123456;t=1"#,
            r#""a";r=5;t=1.2345"#,
            r#""a";R=5"#,
            "(1 2",
            ":abc",
            "?2",
            r#""a";r=5;t=1, , "b""#,
        ] {
            assert_eq!(parse_list(bad.as_bytes()), None, "{bad:?}");
        }
        // Well-formed, but not a quota: negative, missing, or not numbers.
        for ignored in [
            r#""a";r=-1;t=5"#,
            r#""a";r=5"#,
            r#""a";r="5";t=1"#,
            r#""a";r=5;t=-1"#,
        ] {
            assert_eq!(ratelimit(ignored.as_bytes()), None, "{ignored:?}");
        }
        assert!(parse_list(b"(1 \"x\" tok;a=?1) , :aGk=:;p, *t/x:y").is_some());
    }

    #[test]
    fn numbers_within_rfc_8941_bounds() {
        let one = |s: &str| parse_list(s.as_bytes()).unwrap()[0].value;
        assert_eq!(one("999999999999999"), Value::Int(999_999_999_999_999));
        assert_eq!(one("-7"), Value::Int(-7));
        assert_eq!(one("1.5"), Value::Dec(1500));
        assert_eq!(one("999999999999.999"), Value::Dec(999_999_999_999_999));
        assert_eq!(parse_list(b"1234567890123.5"), None);
        assert_eq!(parse_list(b"1."), None);
        assert_eq!(parse_list(b"-"), None);
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_field_read_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
            field in 0usize..7,
            status in prop_oneof![Just(200u16), Just(429), Just(503)],
        ) {
            let name = ["ratelimit", "ratelimit-policy", "ratelimit-remaining", "ratelimit-reset",
                "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"][field];
            let _ = parse_list(&bytes);
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                let mut r = response(status, &[("ratelimit-remaining", "1"), ("x-ratelimit-reset", "1"),
                    ("ratelimit-reset", "1"), ("x-ratelimit-remaining", "1")]);
                r.headers_mut().insert(HeaderName::from_static(name), value);
                let s = Signals::read(&r);
                if let Some(q) = s.quota { prop_assert!(q.reset <= Duration::from_secs(1_000_000_000_000)); }
            }
        }

        #[test]
        fn well_formed_quotas_read_back(r in 0u64..1_000_000_000, t in 0u64..1_000_000_000, name in "[a-z]{1,8}") {
            let field = format!("\"{name}\";r={r};t={t}");
            prop_assert_eq!(ratelimit(field.as_bytes()), Some(Quota { remaining: r, reset: secs(t) }));
            let spaced = format!("  \"x\";r=1;t=1 ,\t{name};r={r};t={t};pk=:AAA=:  ");
            prop_assert!(parse_list(spaced.as_bytes()).is_some());
        }
    }
}
