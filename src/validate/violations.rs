//! The violations model: the [`Validate`] trait, the [`Violations`] it
//! reports into, and the [`Violation`]s, [`Location`]s and [`Invalid`]s they
//! hold.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::num::NonZeroUsize;

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

/// How many violations a rejection lists by default: the cap of
/// [`Violations::new`] and of [`ValidateLayer::max_errors`](super::ValidateLayer::max_errors).
pub const DEFAULT_MAX_ERRORS: NonZeroUsize = NonZeroUsize::new(20).expect("20 is not zero");

impl Default for Violations {
    fn default() -> Self {
        Self::new()
    }
}

impl Violations {
    /// An empty set that keeps up to [`DEFAULT_MAX_ERRORS`].
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX_ERRORS)
    }

    /// An empty set that keeps up to `max` violations.
    pub fn with_max(max: NonZeroUsize) -> Self {
        Self {
            list: Vec::new(),
            max: max.get(),
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
        self.reserve_prefix();
        let len = self.prefix.len();
        pointer::push_key(&mut self.prefix, name);
        f(self);
        self.prefix.truncate(len);
    }

    /// Runs `f` with the pointer descended into element `index`.
    pub fn index(&mut self, index: usize, f: impl FnOnce(&mut Self)) {
        self.reserve_prefix();
        let len = self.prefix.len();
        pointer::push_index(&mut self.prefix, index);
        f(self);
        self.prefix.truncate(len);
    }

    /// Room for a typical pointer at the first descent, instead of growing
    /// it a few bytes at a time.
    #[inline]
    fn reserve_prefix(&mut self) {
        if self.prefix.capacity() == 0 {
            self.prefix.reserve(64);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::rules::range;

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
        let mut v = Violations::with_max(NonZeroUsize::new(3).unwrap());
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
