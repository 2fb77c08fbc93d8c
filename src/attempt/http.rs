//! Ready classifiers for HTTP and gRPC responses, and `Retry-After`.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::classify::{Classify, Retryable, Verdict};

/// The wait a `Retry-After` value asks for, in either of its forms
/// (RFC 9110, section 10.2.3): delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`, and the two obsolete date formats),
/// measured from the system clock. A date in the past is a zero wait.
/// `None` when the value is neither.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use palisade::attempt::parse_retry_after;
///
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("3")), Some(Duration::from_secs(3)));
/// let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
/// let wait = parse_retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
/// assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Beyond u64 seconds is "never" for any caller: the longest wait.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `Retry-After` of `headers`, if any and well formed.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?)
}

/// A set of status codes, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 8]);

impl StatusSet {
    const fn empty() -> Self {
        Self([0; 8])
    }

    const fn with(mut self, code: u16) -> Self {
        // Status codes are 100..=999: offset from 100, 900 bits in 15 words
        // would do; 512 bits cover 100..=611, every registered code.
        let bit = (code - 100) as usize;
        if bit < 512 {
            self.0[bit / 64] |= 1 << (bit % 64);
        }
        self
    }

    fn contains(&self, status: StatusCode) -> bool {
        let bit = (status.as_u16() - 100) as usize;
        bit < 512 && self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// The classifier for HTTP clients: a response of a retryable status is
/// [`Verdict::Retry`] after its `Retry-After` (either form, see
/// [`parse_retry_after`]), any other response is [`Verdict::Done`], an
/// error says for itself ([`Retryable`]).
///
/// The retryable statuses are, by default, those that say the request did
/// not take effect or may succeed later: `408`, `409` (an idempotency key
/// still in flight), `425`, `429`, `500`, `502`, `503` and `504`. A `501`
/// or any other `4xx` is the answer.
///
/// Which requests may be sent again is the request's business
/// ([`Replay`](super::Replay)): an unsafe method without an
/// `Idempotency-Key` never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    retryable: StatusSet,
}

impl HttpClassifier {
    /// The default retryable statuses.
    pub const fn new() -> Self {
        Self {
            retryable: StatusSet::empty()
                .with(408)
                .with(409)
                .with(425)
                .with(429)
                .with(500)
                .with(502)
                .with(503)
                .with(504),
        }
    }

    /// Retries these statuses instead of the defaults (registered codes:
    /// 100 to 611; a larger one is never retried).
    #[must_use]
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.retryable = statuses
            .into_iter()
            .fold(StatusSet::empty(), |set, s| set.with(s.as_u16()));
        self
    }

    /// Whether a response of `status` is retried.
    pub fn is_retryable(&self, status: StatusCode) -> bool {
        self.retryable.contains(status)
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, E: Retryable> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Verdict {
        match result {
            Ok(response) if self.retryable.contains(response.status()) => Verdict::Retry {
                after: retry_after(response.headers()),
            },
            Ok(_) => Verdict::Done,
            Err(e) => e.verdict(),
        }
    }
}

/// `grpc-status`: the status of a gRPC call, in trailers or, for a
/// trailers-only response, in the headers.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-retry-pushback-ms`: the server's requested wait before a retry; a
/// negative or malformed value asks the client not to retry.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The classifier for gRPC clients over HTTP: by the `grpc-status` of a
/// trailers-only response (how a gRPC server answers a call that fails
/// before any message), as gRPC's own retry policy does.
///
/// A retryable status is [`Verdict::Retry`] after the server's
/// `grpc-retry-pushback-ms`, or [`Verdict::Stop`] if the pushback is
/// negative or malformed (the server asks not to be retried). Other
/// statuses, and responses whose status comes later in the trailers, are
/// [`Verdict::Done`]. By default only `UNAVAILABLE` (14) is retryable, as
/// the gRPC status guide says; `DEADLINE_EXCEEDED` never is, since the
/// deadline is spent. An HTTP error without a `grpc-status` (a proxy's
/// `429`, `502`, `503` or `504`) is `UNAVAILABLE`, as gRPC maps it.
///
/// # A call is committed once its headers arrive
///
/// A response with headers but no `grpc-status` is a call under way: the
/// server has started answering, and its status comes in the trailers,
/// after the messages. That response is [`Verdict::Done`] and returned as
/// it is, to a retry and to a hedge alike, even if its trailers later say
/// `UNAVAILABLE`. This is gRPC's own rule (gRFC A6: an RPC is committed
/// once the client receives response headers): the server may have acted
/// on the call and the caller may already be reading its messages, so it
/// cannot be sent again unseen. Only a trailers-only response, a call
/// refused before any message, is retried.
///
/// To tonic, a trailers-only response is what
/// `tonic::Status::into_http()` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    /// Bit `n`: code `n` is retryable (codes are 0..=16).
    retryable: u32,
}

impl GrpcClassifier {
    /// `UNAVAILABLE`, the gRPC status code 14.
    pub const UNAVAILABLE: u8 = 14;

    /// Retries `UNAVAILABLE` only.
    pub const fn new() -> Self {
        Self {
            retryable: 1 << Self::UNAVAILABLE,
        }
    }

    /// Retries these status codes instead (gRPC's numbers, 0 to 16; with
    /// tonic, `tonic::Code::Unavailable as u8`). Larger numbers are ignored.
    #[must_use]
    pub fn codes(mut self, codes: impl IntoIterator<Item = u8>) -> Self {
        self.retryable = codes
            .into_iter()
            .filter(|&c| c <= 16)
            .fold(0, |set, c| set | 1 << c);
        self
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, E: Retryable> Classify<Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Verdict {
        let response = match result {
            Ok(response) => response,
            Err(e) => return e.verdict(),
        };
        let headers = response.headers();
        let code = match headers.get(GRPC_STATUS) {
            Some(value) => digits(value).and_then(|v| v.parse::<u8>().ok()),
            // No gRPC status: an HTTP error from a proxy or a load balancer
            // in front of the server, mapped as gRPC maps it
            // (doc/http-grpc-status-mapping.md): 429, 502, 503 and 504 are
            // UNAVAILABLE.
            None if matches!(response.status().as_u16(), 429 | 502 | 503 | 504) => {
                Some(Self::UNAVAILABLE)
            }
            None => None,
        };
        match code {
            Some(code) if code <= 16 && self.retryable & (1 << code) != 0 => {
                match headers.get(GRPC_RETRY_PUSHBACK_MS) {
                    None => Verdict::Retry { after: None },
                    Some(value) => match digits(value).and_then(|v| v.parse::<u64>().ok()) {
                        Some(ms) => Verdict::Retry {
                            after: Some(Duration::from_millis(ms)),
                        },
                        None => Verdict::Stop,
                    },
                }
            }
            _ => Verdict::Done,
        }
    }
}

/// The value if it is all ASCII digits (no sign, no blank), as gRPC's
/// integers are.
fn digits(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, std::io::Error> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        Ok(builder.body(()).unwrap())
    }

    #[test]
    fn retries_the_default_statuses_after_their_retry_after() {
        let c = HttpClassifier::new();
        assert_eq!(
            c.classify(&response(503, &[("retry-after", "7")])),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            c.classify(&response(429, &[("retry-after", "later")])),
            Verdict::Retry { after: None }
        );
        for done in [200, 201, 400, 404, 422, 501, 599] {
            assert_eq!(c.classify(&response(done, &[])), Verdict::Done, "{done}");
        }
        let only_503 = c.statuses([StatusCode::SERVICE_UNAVAILABLE]);
        assert_eq!(only_503.classify(&response(500, &[])), Verdict::Done);
        assert!(only_503.is_retryable(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn an_http_date_in_the_past_is_no_wait() {
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&past).unwrap()),
            Some(Duration::ZERO)
        );
        let huge = HeaderValue::from_static("99999999999999999999999");
        assert_eq!(
            parse_retry_after(&huge),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_reads_every_rfc_9110_form() {
        let at = SystemTime::now() + Duration::from_secs(90);
        let fixdate = httpdate::fmt_http_date(at); // "Wed, 21 Oct 2026 07:28:00 GMT"
        let (wday, rest) = fixdate.split_once(", ").unwrap();
        let parts: Vec<&str> = rest.split(' ').collect();
        let (day, mon, year, time) = (parts[0], parts[1], parts[2], parts[3]);
        let long = match wday {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            _ => "Sunday",
        };
        let rfc850 = format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]);
        let asctime = format!(
            "{wday} {mon} {:>2} {time} {year}",
            day.trim_start_matches('0')
        );
        for form in [fixdate.clone(), rfc850, asctime, format!("  {fixdate}\t")] {
            let wait = parse_retry_after(&HeaderValue::from_str(&form).unwrap());
            let wait = wait.unwrap_or_else(|| panic!("{form:?}"));
            assert!(
                wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
                "{form:?}: {wait:?}"
            );
        }
        for (value, wait) in [(" 120 ", Some(120)), ("0", Some(0)), ("007", Some(7))] {
            assert_eq!(
                parse_retry_after(&HeaderValue::from_static(value)),
                wait.map(Duration::from_secs),
                "{value:?}"
            );
        }
        for bad in [
            "-1",
            "+5",
            "1.5",
            "1 2",
            "",
            "0x10",
            "wed, 21 oct 2026 07:28:00 gmt",
        ] {
            assert_eq!(
                parse_retry_after(&HeaderValue::from_static(bad)),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grpc_retries_unavailable_after_its_pushback_and_stops_on_a_negative_one() {
        let c = GrpcClassifier::new();
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "250")]
            )),
            Verdict::Retry {
                after: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]
            )),
            Verdict::Stop
        );
        assert_eq!(
            c.classify(&response(200, &[("grpc-status", "4")])),
            Verdict::Done
        );
        assert_eq!(
            c.classify(&response(200, &[("grpc-status", "3")])),
            Verdict::Done
        );
        assert_eq!(c.classify(&response(200, &[])), Verdict::Done);
        assert_eq!(
            c.classify(&response(503, &[])),
            Verdict::Retry { after: None },
            "a proxy's 503 without grpc-status is UNAVAILABLE"
        );
        assert_eq!(c.classify(&response(500, &[])), Verdict::Done);
        assert_eq!(
            c.classify(&response(200, &[("grpc-status", "+14")])),
            Verdict::Done
        );
        let also_8 = c.codes([14, 8, 200]);
        assert_eq!(
            also_8.classify(&response(200, &[("grpc-status", "8")])),
            Verdict::Retry { after: None }
        );
    }

    #[test]
    fn grpc_codes_out_of_range_and_empty_values_are_answers() {
        let c = GrpcClassifier::new().codes([14, 17, 31, 32, 255]);
        for code in [
            "",
            "17",
            "31",
            "32",
            "255",
            "256",
            "-14",
            "1 4",
            "UNAVAILABLE",
        ] {
            assert_eq!(
                c.classify(&response(200, &[("grpc-status", code)])),
                Verdict::Done,
                "{code:?}"
            );
        }
        assert_eq!(GrpcClassifier::new().codes([17, 255]).retryable, 0);
        for pushback in ["", "abc", "1.5", "99999999999999999999999"] {
            assert_eq!(
                c.classify(&response(
                    200,
                    &[("grpc-status", "14"), ("grpc-retry-pushback-ms", pushback)]
                )),
                Verdict::Stop,
                "{pushback:?}: malformed asks not to retry"
            );
        }
    }

    proptest! {
        #[test]
        fn any_retry_after_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_retry_after(&value);
            }
        }

        #[test]
        fn any_status_and_pushback_classify_without_panic(status in 100u16..1000, code in any::<String>(), pushback in any::<String>()) {
            let mut r = Response::builder().status(status);
            if let Ok(v) = HeaderValue::from_str(&code) { r = r.header("grpc-status", v); }
            if let Ok(v) = HeaderValue::from_str(&pushback) { r = r.header("grpc-retry-pushback-ms", v); }
            let r: Result<Response<()>, std::io::Error> = Ok(r.body(()).unwrap());
            let _ = HttpClassifier::new().classify(&r);
            let _ = GrpcClassifier::new().classify(&r);
        }
    }
}
