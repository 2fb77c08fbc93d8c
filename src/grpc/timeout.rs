//! The `grpc-timeout` header: a gRPC call's deadline on the wire.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// `grpc-timeout`: the time a gRPC caller gives the call, as at most eight
/// ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), such as `250m`.
///
/// A per-request [`TimeoutLayer`](crate::timeout::TimeoutLayer::per_request)
/// reads it from a gRPC request and, with `forward_header(true)`, writes what
/// is left of the budget into an outgoing one.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The most digits a `grpc-timeout` value may have.
const MAX_DIGITS: usize = 8;
const MAX_VALUE: u64 = 99_999_999;

/// A `grpc-timeout` value that breaks the gRPC wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidGrpcTimeout {
    value: String,
}

impl InvalidGrpcTimeout {
    /// The value as received, with bytes that are not visible ASCII escaped.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for InvalidGrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed grpc-timeout {:?}: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
            self.value
        )
    }
}

impl std::error::Error for InvalidGrpcTimeout {}

/// Parses a `grpc-timeout` value (gRPC over HTTP/2, "Requests").
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use palisade::grpc::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("250m")), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("2H")), Ok(Duration::from_secs(7200)));
/// assert!(parse_grpc_timeout(&HeaderValue::from_static("1.5S")).is_err());
/// assert!(parse_grpc_timeout(&HeaderValue::from_static("123456789m")).is_err());
/// ```
pub fn parse_grpc_timeout(value: &HeaderValue) -> Result<Duration, InvalidGrpcTimeout> {
    let bytes = value.as_bytes();
    let invalid = || InvalidGrpcTimeout {
        value: bytes.escape_ascii().to_string(),
    };
    let (&unit, digits) = bytes.split_last().ok_or_else(invalid)?;
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    // At most eight digits: no overflow in u64, nor below in any unit.
    let n = digits
        .iter()
        .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(invalid()),
    })
}

/// A budget as a `grpc-timeout` value: the finest unit that holds it in
/// eight digits, rounded down, so the next hop never outlives this one.
/// Budgets past 99,999,999 hours are written as that.
///
/// ```
/// use std::time::Duration;
/// use palisade::grpc::grpc_timeout_value;
///
/// assert_eq!(grpc_timeout_value(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(grpc_timeout_value(Duration::from_secs(3 * 86_400)), "259200S");
/// assert_eq!(grpc_timeout_value(Duration::MAX), "99999999H");
/// ```
pub fn grpc_timeout_value(budget: Duration) -> HeaderValue {
    let nanos = budget.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    let (n, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(n, _)| n <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), "H"));
    HeaderValue::try_from(format!("{n}{unit}"))
        .expect("digits and a letter are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Duration, InvalidGrpcTimeout> {
        parse_grpc_timeout(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("1H"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("4m"), Ok(Duration::from_millis(4)));
        assert_eq!(parse("5u"), Ok(Duration::from_micros(5)));
        assert_eq!(parse("6n"), Ok(Duration::from_nanos(6)));
        assert_eq!(parse("0m"), Ok(Duration::ZERO));
        assert_eq!(
            parse("99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_values_are_refused_with_the_value() {
        for bad in [
            "",
            "m",
            "10",
            "1.5S",
            "-1S",
            "+1S",
            "1 S",
            " 1S",
            "123456789m",
            "1s",
            "1h",
            "1x",
            "1mm",
            "１S",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains("grpc-timeout"), "{err}");
        }
        let err = parse_grpc_timeout(&HeaderValue::from_bytes(b"1\xffS").unwrap()).unwrap_err();
        assert_eq!(err.value(), "1\\xffS");
    }

    #[test]
    fn written_values_round_down_in_the_finest_unit() {
        assert_eq!(grpc_timeout_value(Duration::ZERO), "0n");
        assert_eq!(
            grpc_timeout_value(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(
            grpc_timeout_value(Duration::from_nanos(100_000_001)),
            "100000u"
        );
        assert_eq!(grpc_timeout_value(Duration::from_secs(100_000)), "100000S");
        assert_eq!(
            grpc_timeout_value(Duration::from_secs(100_000_000)),
            "1666666M"
        );
        assert_eq!(grpc_timeout_value(Duration::MAX), "99999999H");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_grpc_timeout(&value);
            }
        }

        #[test]
        fn a_written_budget_reads_back_never_longer_and_close(nanos in any::<u64>()) {
            let budget = Duration::from_nanos(nanos);
            let back = parse_grpc_timeout(&grpc_timeout_value(budget)).unwrap();
            prop_assert!(back <= budget);
            // The finest unit that fits holds at least 99,999 of it (a
            // coarser unit is at most 1000 times a finer): lost is less than
            // one unit, under 1 part in 10^5.
            prop_assert!(budget - back <= budget / 99_999 + Duration::from_nanos(1));
        }
    }
}
