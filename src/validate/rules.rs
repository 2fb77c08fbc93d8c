//! The [`Validate`] trait, the [`Violations`] it reports into, and small
//! built-in rules for lengths, ranges and patterns.
//!
//! Rules return `Result<(), Invalid>`; [`Violations::check`] records a
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

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::ops::{Bound, RangeBounds};

use http::HeaderName;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::pointer;

/// Business rules of a request body, checked after it parsed.
///
/// Report every broken rule into `v`: the layer answers 422 with all of them
/// (up to its cap), each under its JSON pointer. A type without rules writes
/// `impl Validate for MyType {}`.
pub trait Validate {
    /// Records the violations of `self` into `v`, relative to
    /// [`Violations::pointer`].
    fn validate(&self, v: &mut Violations) {
        let _ = v;
    }
}

impl<T: Validate + ?Sized> Validate for &T {
    fn validate(&self, v: &mut Violations) {
        (**self).validate(v);
    }
}

impl<T: Validate + ?Sized> Validate for Box<T> {
    fn validate(&self, v: &mut Violations) {
        (**self).validate(v);
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, v: &mut Violations) {
        if let Some(value) = self {
            value.validate(v);
        }
    }
}

impl<T: Validate> Validate for [T] {
    fn validate(&self, v: &mut Violations) {
        for (i, item) in self.iter().enumerate() {
            v.index(i, |v| item.validate(v));
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, v: &mut Violations) {
        self.as_slice().validate(v);
    }
}

impl<K: AsRef<str>, V: Validate> Validate for std::collections::BTreeMap<K, V> {
    fn validate(&self, v: &mut Violations) {
        for (key, value) in self {
            v.nested(key.as_ref(), value);
        }
    }
}

impl<K: AsRef<str>, V: Validate, H> Validate for std::collections::HashMap<K, V, H> {
    fn validate(&self, v: &mut Violations) {
        for (key, value) in self {
            v.nested(key.as_ref(), value);
        }
    }
}

impl Validate for serde_json::Value {}

/// A broken rule, before it is placed at a pointer: a machine-readable
/// `code` and a human `detail` that never repeats the submitted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    code: Cow<'static, str>,
    detail: Cow<'static, str>,
}

impl Invalid {
    /// A failure with `code` (such as `"range"`) and `detail` (such as
    /// `"must be between 1 and 100"`).
    pub fn new(code: impl Into<Cow<'static, str>>, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Invalid {}

/// Where a [`Violation`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// An RFC 6901 JSON pointer into the request body (`""` is the whole body).
    Pointer(String),
    /// A request header.
    Header(HeaderName),
}

/// One broken rule: where, a code, and a detail.
///
/// Serialises as `{"pointer": "/items/0/quantity", "detail": "...", "code":
/// "range"}` (or `"header"` instead of `"pointer"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    location: Location,
    code: Cow<'static, str>,
    detail: Cow<'static, str>,
}

impl Violation {
    /// A violation at a JSON pointer.
    pub fn at_pointer(pointer: impl Into<String>, invalid: Invalid) -> Self {
        Self {
            location: Location::Pointer(pointer.into()),
            code: invalid.code,
            detail: invalid.detail,
        }
    }

    /// A violation of a request header.
    pub fn at_header(header: HeaderName, invalid: Invalid) -> Self {
        Self {
            location: Location::Header(header),
            code: invalid.code,
            detail: invalid.detail,
        }
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The JSON pointer, if it is in the body.
    pub fn pointer(&self) -> Option<&str> {
        match &self.location {
            Location::Pointer(p) => Some(p),
            Location::Header(_) => None,
        }
    }

    /// The header, if it is a header.
    pub fn header(&self) -> Option<&HeaderName> {
        match &self.location {
            Location::Header(h) => Some(h),
            Location::Pointer(_) => None,
        }
    }

    /// The machine-readable code, such as `range` or `required`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl Serialize for Violation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        match &self.location {
            Location::Pointer(p) => map.serialize_entry("pointer", p)?,
            Location::Header(h) => map.serialize_entry("header", h.as_str())?,
        }
        map.serialize_entry("detail", &self.detail)?;
        map.serialize_entry("code", &self.code)?;
        map.end()
    }
}

impl Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Pointer(p) if p.is_empty() => write!(f, "body: {}", self.detail),
            Location::Pointer(p) => write!(f, "{p}: {}", self.detail),
            Location::Header(h) => write!(f, "header {h}: {}", self.detail),
        }
    }
}

/// The violations found in one request, kept up to a cap; past the cap they
/// are only counted.
///
/// It tracks the pointer of the value being validated: [`field`](Self::field)
/// and [`index`](Self::index) descend into a member or element, and
/// [`check`](Self::check) records a rule's failure under it.
#[derive(Debug, Clone)]
pub struct Violations {
    list: Vec<Violation>,
    max: usize,
    omitted: usize,
    prefix: String,
}

/// The cap of a [`Violations::new`].
pub const DEFAULT_MAX_VIOLATIONS: usize = 20;

impl Default for Violations {
    fn default() -> Self {
        Self::new()
    }
}

impl Violations {
    /// An empty set that keeps up to [`DEFAULT_MAX_VIOLATIONS`].
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX_VIOLATIONS)
    }

    /// An empty set that keeps up to `max` violations (at least one).
    pub fn with_max(max: usize) -> Self {
        Self {
            list: Vec::new(),
            max: max.max(1),
            omitted: 0,
            prefix: String::new(),
        }
    }

    /// The pointer of the value being validated (`""` at the root).
    pub fn pointer(&self) -> &str {
        &self.prefix
    }

    /// Records a rule's failure at member `field` of the current value (an
    /// empty `field` is the member named `""`, as RFC 6901 has it); does
    /// nothing on `Ok`.
    pub fn check(&mut self, field: &str, result: Result<(), Invalid>) {
        if let Err(invalid) = result {
            self.add(field, invalid);
        }
    }

    /// Records a rule's failure at the current value itself; does nothing on
    /// `Ok`.
    pub fn check_here(&mut self, result: Result<(), Invalid>) {
        if let Err(invalid) = result {
            self.add_here(invalid);
        }
    }

    /// Records a failure at member `field` of the current value.
    pub fn add(&mut self, field: &str, invalid: Invalid) {
        if self.is_full() {
            self.omitted += 1;
            return;
        }
        let mut pointer = self.prefix.clone();
        pointer::push_key(&mut pointer, field);
        self.list.push(Violation::at_pointer(pointer, invalid));
    }

    /// Records a failure at the current value itself.
    pub fn add_here(&mut self, invalid: Invalid) {
        if self.is_full() {
            self.omitted += 1;
            return;
        }
        self.list
            .push(Violation::at_pointer(self.prefix.clone(), invalid));
    }

    /// Records a violation as it is (its location is not prefixed).
    pub fn push(&mut self, violation: Violation) {
        if self.is_full() {
            self.omitted += 1;
        } else {
            self.list.push(violation);
        }
    }

    /// Runs `f` with the pointer descended into member `name`.
    pub fn field(&mut self, name: &str, f: impl FnOnce(&mut Self)) {
        let len = self.prefix.len();
        pointer::push_key(&mut self.prefix, name);
        f(self);
        self.prefix.truncate(len);
    }

    /// Runs `f` with the pointer descended into element `index`.
    pub fn index(&mut self, index: usize, f: impl FnOnce(&mut Self)) {
        let len = self.prefix.len();
        pointer::push_index(&mut self.prefix, index);
        f(self);
        self.prefix.truncate(len);
    }

    /// Validates `value` as member `name`.
    pub fn nested<V: Validate + ?Sized>(&mut self, name: &str, value: &V) {
        self.field(name, |v| value.validate(v));
    }

    /// Validates each element of `items` as `name/0`, `name/1`, ...
    pub fn each<V: Validate>(&mut self, name: &str, items: &[V]) {
        self.field(name, |v| items.validate(v));
    }

    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.omitted == 0
    }

    /// Whether the cap is reached; later violations are only counted.
    pub fn is_full(&self) -> bool {
        self.list.len() >= self.max
    }

    /// How many violations were recorded, kept or not.
    pub fn total(&self) -> usize {
        self.list.len() + self.omitted
    }

    /// How many were counted past the cap and dropped.
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// The kept violations, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.list.iter()
    }

    /// The kept violations.
    pub fn as_slice(&self) -> &[Violation] {
        &self.list
    }

    /// The kept violations, owned.
    pub fn into_vec(self) -> Vec<Violation> {
        self.list
    }
}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.total();
        write!(f, "{n} invalid value{}", if n == 1 { "" } else { "s" })?;
        for (i, v) in self.list.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            Display::fmt(v, f)?;
        }
        Ok(())
    }
}

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
    // Bytes bound the characters from above and from below (x4): most
    // strings are decided without counting.
    let bytes = s.len();
    let decided = match (range.start_bound(), range.end_bound()) {
        (Bound::Unbounded, Bound::Included(&b)) if bytes <= b => true,
        (Bound::Included(&a), Bound::Unbounded) if bytes / 4 >= a => true,
        _ => false,
    };
    if decided || range.contains(&s.chars().count()) {
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

    #[test]
    fn maps_validate_each_value_under_its_escaped_key() {
        struct Qty(u32);
        impl Validate for Qty {
            fn validate(&self, v: &mut Violations) {
                v.check_here(range(self.0, 1..=9));
            }
        }
        let map = std::collections::BTreeMap::from([("a/b", Qty(0)), ("c", Qty(1))]);
        let mut v = Violations::new();
        v.nested("lines", &map);
        let ptrs: Vec<_> = v.iter().map(|x| x.pointer().unwrap()).collect();
        assert_eq!(ptrs, ["/lines/a~1b"]);
    }

    #[test]
    fn violations_stop_at_the_cap_but_count() {
        let mut v = Violations::with_max(3);
        v.field("a/b", |v| {
            v.index(0, |v| v.check("~", Err(Invalid::new("x", "y"))));
            v.check_here(Err(Invalid::new("x", "y")));
            v.check("", Err(Invalid::new("x", "y")));
            v.check("c", Err(Invalid::new("x", "y")));
        });
        assert_eq!(v.total(), 4);
        assert_eq!(v.omitted(), 1);
        let ptrs: Vec<_> = v.iter().map(|x| x.pointer().unwrap().to_owned()).collect();
        assert_eq!(ptrs, ["/a~1b/0/~0", "/a~1b", "/a~1b/"]);
        assert_eq!(v.pointer(), "");
    }
}
