//! The budget header: reading an incoming one, writing an outgoing one.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Deadline;

/// `Request-Timeout`: the header that carries a request's budget, in whole
/// milliseconds (ASCII digits only, such as `Request-Timeout: 2500`).
///
/// A per-request timeout reads it by default and clamps it to its own
/// timeout, so a caller can only shorten the budget; a malformed value is
/// ignored (see [`parse_budget`]).
pub const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("request-timeout");

/// Parses a budget header value: whole milliseconds, ASCII digits only.
///
/// Returns `None` for anything else (empty, a sign, a fraction, a unit,
/// whitespace inside, non-ASCII). A number too large for `u64` saturates; the
/// timeout clamps it to its maximum anyway.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use palisade::timeout::parse_budget;
///
/// assert_eq!(parse_budget(&HeaderValue::from_static("1500")), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_budget(&HeaderValue::from_static("1.5s")), None);
/// ```
pub fn parse_budget(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let millis = bytes.iter().fold(0u64, |acc, &b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    Some(Duration::from_millis(millis))
}

/// A budget as a header value: whole milliseconds, rounded down.
pub(crate) fn millis_header(budget: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX))
}

impl Deadline {
    /// The remaining budget as a [`REQUEST_TIMEOUT`] header value, in whole
    /// milliseconds rounded down, so the next hop never outlives this one.
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn to_header_value(&self) -> HeaderValue {
        millis_header(self.remaining())
    }

    /// Writes the remaining budget into `headers` as [`REQUEST_TIMEOUT`],
    /// replacing any value there: call it on an outgoing request to forward
    /// the budget to the next service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::timeout::{Deadline, REQUEST_TIMEOUT};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut outgoing = http::Request::new(());
    /// Deadline::after(Duration::from_secs(2)).write_header(outgoing.headers_mut());
    /// let millis: u64 = outgoing.headers()[REQUEST_TIMEOUT].to_str().unwrap().parse().unwrap();
    /// assert!(millis <= 2000);
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn write_header(&self, headers: &mut HeaderMap) {
        headers.insert(REQUEST_TIMEOUT, self.to_header_value());
    }
}

#[cfg(feature = "grpc")]
impl Deadline {
    /// Writes the remaining budget into `headers` as
    /// [`GRPC_TIMEOUT`](crate::grpc::GRPC_TIMEOUT), rounded down
    /// ([`grpc_timeout_value`](crate::grpc::grpc_timeout_value)), replacing
    /// any value there: call it on an outgoing gRPC request to forward the
    /// budget to the next service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::grpc::{GRPC_TIMEOUT, parse_grpc_timeout};
    /// use palisade::timeout::Deadline;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut outgoing = http::Request::new(());
    /// Deadline::after(Duration::from_secs(2)).write_grpc_timeout(outgoing.headers_mut());
    /// let budget = parse_grpc_timeout(&outgoing.headers()[GRPC_TIMEOUT]).unwrap();
    /// assert!(budget <= Duration::from_secs(2));
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
    pub fn write_grpc_timeout(&self, headers: &mut HeaderMap) {
        headers.insert(
            crate::grpc::GRPC_TIMEOUT,
            crate::grpc::grpc_timeout_value(self.remaining()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digits_only() {
        let parse = |s: &'static str| parse_budget(&HeaderValue::from_static(s));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("250"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse("99999999999999999999999"),
            Some(Duration::from_millis(u64::MAX))
        );
        for bad in ["", "+5", "-5", "1.5", "5ms", "5 0", "abc", "0x10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
