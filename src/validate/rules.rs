//! Small built-in rules for lengths, ranges, patterns and formats.
//!
//! Rules return `Result<(), Invalid>`; [`Violations::check`](super::Violations::check) records a
//! failure under a field's JSON pointer:
//!
//! ```
//! use palisade::validate::{Validate, Violations, rules};
//!
//! struct Line { sku: String, quantity: u32 }
//! struct Order { customer: String, lines: Vec<Line> }
//!
//! impl Validate for Line {
//!     fn validate(&self, v: &mut Violations) {
//!         v.check("sku", rules::pattern(&self.sku, |c| c.is_ascii_alphanumeric() || c == '-', "letters, digits and dashes"));
//!         v.check("quantity", rules::range(self.quantity, 1..=100));
//!     }
//! }
//!
//! impl Validate for Order {
//!     fn validate(&self, v: &mut Violations) {
//!         v.check("customer", rules::length(&self.customer, 1..=64));
//!         v.check("lines", rules::count(self.lines.len(), 1..=50));
//!         v.each("lines", &self.lines);
//!     }
//! }
//!
//! let order = Order { customer: String::new(), lines: vec![Line { sku: "A/1".into(), quantity: 0 }] };
//! let mut v = Violations::new();
//! order.validate(&mut v);
//! let found: Vec<_> = v.iter().map(|x| (x.pointer().unwrap(), x.code())).collect();
//! assert_eq!(found, [("/customer", "length"), ("/lines/0/sku", "pattern"), ("/lines/0/quantity", "range")]);
//! ```

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};

use super::violations::Invalid;

/// Describes a range's bounds: "between 1 and 10", "at least 1", ...
fn bounds<T: Display>(range: &impl RangeBounds<T>) -> String {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(a), Bound::Included(b)) => format!("between {a} and {b}"),
        (Bound::Included(a), Bound::Excluded(b)) => format!("at least {a} and less than {b}"),
        (Bound::Included(a), Bound::Unbounded) => format!("at least {a}"),
        (Bound::Excluded(a), Bound::Included(b)) => format!("greater than {a} and at most {b}"),
        (Bound::Excluded(a), Bound::Excluded(b)) => format!("greater than {a} and less than {b}"),
        (Bound::Excluded(a), Bound::Unbounded) => format!("greater than {a}"),
        (Bound::Unbounded, Bound::Included(b)) => format!("at most {b}"),
        (Bound::Unbounded, Bound::Excluded(b)) => format!("less than {b}"),
        (Bound::Unbounded, Bound::Unbounded) => "any value".to_owned(),
    }
}

fn last_bound_is_one(range: &impl RangeBounds<usize>) -> bool {
    match (range.start_bound(), range.end_bound()) {
        (_, Bound::Included(b)) => *b == 1,
        (_, Bound::Excluded(b)) => *b == 1,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Unbounded) => *a == 1,
        (Bound::Unbounded, Bound::Unbounded) => false,
    }
}

/// `value` lies in `range` (code `range`): "must be between 1 and 100".
/// NaN is outside every range.
pub fn range<T: PartialOrd + Display>(value: T, range: impl RangeBounds<T>) -> Result<(), Invalid> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new("range", format!("must be {}", bounds(&range))))
    }
}

/// The number of characters (Unicode scalar values) of `s` lies in `range`
/// (code `length`): "must have between 1 and 64 characters".
pub fn length(s: &str, range: impl RangeBounds<usize>) -> Result<(), Invalid> {
    // Bytes bound the characters from above, and from below (a character
    // is at most 4 bytes): when both bounds lie in the range, so does the
    // count, and most strings are decided without counting.
    let bytes = s.len();
    if range.contains(&bytes) && range.contains(&bytes.div_ceil(4)) {
        return Ok(());
    }
    let chars = if s.is_ascii() {
        bytes
    } else {
        s.chars().count()
    };
    if range.contains(&chars) {
        return Ok(());
    }
    let unit = if last_bound_is_one(&range) {
        "character"
    } else {
        "characters"
    };
    Err(Invalid::new(
        "length",
        format!("must have {} {unit}", bounds(&range)),
    ))
}

/// A collection's length `len` lies in `range` (code `length`): "must have
/// between 1 and 50 items".
pub fn count(len: usize, range: impl RangeBounds<usize>) -> Result<(), Invalid> {
    if range.contains(&len) {
        return Ok(());
    }
    let unit = if last_bound_is_one(&range) {
        "item"
    } else {
        "items"
    };
    Err(Invalid::new(
        "length",
        format!("must have {} {unit}", bounds(&range)),
    ))
}

/// Every character of `s` satisfies `allowed` (code `pattern`): "must contain
/// only {description}". A character predicate instead of a regex keeps the
/// check linear and the dependency tree small.
pub fn pattern(
    s: &str,
    allowed: impl Fn(char) -> bool,
    description: &'static str,
) -> Result<(), Invalid> {
    if s.chars().all(allowed) {
        Ok(())
    } else {
        Err(Invalid::new(
            "pattern",
            format!("must contain only {description}"),
        ))
    }
}

/// `s` satisfies `predicate` (code `format`): "must be {description}", such
/// as "must be an ISO 4217 currency code".
pub fn format(
    s: &str,
    predicate: impl Fn(&str) -> bool,
    description: &'static str,
) -> Result<(), Invalid> {
    if predicate(s) {
        Ok(())
    } else {
        Err(Invalid::new("format", format!("must be {description}")))
    }
}

/// `s` has a character other than whitespace (code `required`).
pub fn not_blank(s: &str) -> Result<(), Invalid> {
    if s.chars().any(|c| !c.is_whitespace()) {
        Ok(())
    } else {
        Err(Invalid::new("required", "must not be blank"))
    }
}

/// `value` is one of `allowed` (code `enum`): "must be one of a, b, c".
pub fn one_of<T: PartialEq + Display>(value: &T, allowed: &[T]) -> Result<(), Invalid> {
    if allowed.contains(value) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    Err(Invalid::new(
        "enum",
        format!("must be one of {}", list.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_bounds_without_the_value() {
        assert_eq!(
            range(0, 1..=100).unwrap_err().detail(),
            "must be between 1 and 100"
        );
        assert_eq!(range(5, ..5).unwrap_err().detail(), "must be less than 5");
        assert_eq!(range(f64::NAN, 0.0..=1.0).unwrap_err().code(), "range");
        assert_eq!(
            length("", 1..).unwrap_err().detail(),
            "must have at least 1 character"
        );
        assert_eq!(
            length("ééé", ..=2).unwrap_err().detail(),
            "must have at most 2 characters"
        );
        assert!(length("ééé", ..=3).is_ok());
        assert!(length("abcdefgh", 2..).is_ok());
        assert_eq!(
            count(0, 1..=50).unwrap_err().detail(),
            "must have between 1 and 50 items"
        );
        assert_eq!(
            one_of(&"x", &["a", "b"]).unwrap_err().detail(),
            "must be one of a, b"
        );
        assert!(not_blank(" \t").is_err());
    }
}
