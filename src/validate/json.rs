//! Typed JSON bodies: parsing, mapping serde's errors to violations, and the
//! values handed to the handler.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::Error;
use super::pointer;
use super::rules::{Invalid, Validate, Violation, Violations};

/// Whether members the target type does not declare are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownFields {
    /// Every unknown member is a 422 violation (code `unknown_field`), so a
    /// misspelt optional field is caught instead of silently ignored.
    #[default]
    Reject,
    /// Unknown members are ignored, as serde does by default.
    ///
    /// Also the fastest choice with `#[serde(deny_unknown_fields)]` on the
    /// body types: serde then refuses the first unknown member (a 422 at its
    /// pointer) without the per-key bookkeeping that listing all of them
    /// costs (about 0.5x a plain serde_json parse of a typical order).
    Allow,
}

/// The parsed and validated body, in the request extensions.
///
/// The layer inserts it; handlers take it out (with feature `axum`, it is an
/// extractor: `Validated(order): Validated<Order>`). The raw bytes are in
/// [`RawBody`] and the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validated<T>(pub T);

impl<T> Validated<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Validated<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The bytes of a validated JSON body, in the request extensions (for
/// signatures, fingerprints or logging without re-reading the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody(pub Bytes);

/// Parses and validates `bytes` as a `T`.
pub(crate) fn parse<T, E>(
    bytes: &[u8],
    unknown: UnknownFields,
    max_errors: usize,
) -> Result<T, Error<E>>
where
    T: DeserializeOwned + Validate,
{
    let mut violations = Violations::with_max(max_errors);
    // Fast path without pointer tracking (which allocates every key): most
    // bodies parse. On an error, parse again with tracking for the pointer.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fast = match unknown {
        UnknownFields::Allow => T::deserialize(&mut de),
        UnknownFields::Reject => {
            serde_ignored::deserialize(&mut de, |path| record_unknown(&mut violations, &path))
        }
    };
    let value = match fast {
        Ok(value) => value,
        Err(_) => {
            violations = Violations::with_max(max_errors);
            parse_tracked(bytes, unknown, &mut violations)?
        }
    };
    if let Err(error) = de.end() {
        return Err(syntax(&error));
    }
    value.validate(&mut violations);
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(Error::Invalid(violations))
    }
}

fn record_unknown(violations: &mut Violations, path: &serde_ignored::Path<'_>) {
    let pointer = if violations.is_full() {
        String::new() // only counted
    } else {
        pointer::from_ignored(path)
    };
    violations.push(Violation::at_pointer(pointer, unknown_field()));
}

/// The slow path: the same parse, tracking the path for the error's pointer.
fn parse_tracked<T, E>(
    bytes: &[u8],
    unknown: UnknownFields,
    violations: &mut Violations,
) -> Result<T, Error<E>>
where
    T: DeserializeOwned,
{
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = match unknown {
        UnknownFields::Allow => serde_path_to_error::deserialize::<_, T>(&mut de),
        UnknownFields::Reject => {
            let mut on_ignored = |path: serde_ignored::Path<'_>| record_unknown(violations, &path);
            let ignored = serde_ignored::Deserializer::new(&mut de, &mut on_ignored);
            serde_path_to_error::deserialize::<_, T>(ignored)
        }
    };
    match result {
        Ok(value) => Ok(value),
        Err(error) => Err(reject(bytes, error, std::mem::take(violations))),
    }
}

fn unknown_field() -> Invalid {
    Invalid::new("unknown_field", "is not allowed")
}

fn reject<E>(
    bytes: &[u8],
    error: serde_path_to_error::Error<serde_json::Error>,
    mut violations: Violations,
) -> Error<E> {
    let mut at = pointer::from_path(error.path());
    let inner = error.inner();
    match inner.classify() {
        Category::Data => {}
        Category::Syntax | Category::Eof | Category::Io => {
            let message = message(inner);
            // 1e400 is valid JSON grammar: a value out of range, not
            // malformed, unless the body is malformed further on.
            if message == "number out of range" {
                if let Err(e) = grammar(bytes) {
                    return syntax(&e);
                }
                violations.push(Violation::at_pointer(
                    at,
                    Invalid::new("range", "is out of range"),
                ));
                return Error::Invalid(violations);
            }
            return syntax(inner);
        }
    }
    // Serde stops at the first type error, which may come before a syntax
    // error further on: malformed JSON is a 400 wherever it is.
    if let Err(e) = grammar(bytes) {
        return syntax(&e);
    }
    let message = message(inner);
    let invalid = describe(&message, &mut at);
    violations.push(Violation::at_pointer(at, invalid));
    Error::Invalid(violations)
}

// Whether `bytes` is JSON by the grammar alone: a raw value is scanned, never
// converted, so a number too large for any Rust type still passes.
fn grammar(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<&serde_json::value::RawValue>(bytes).map(drop)
}

fn syntax<E>(error: &serde_json::Error) -> Error<E> {
    Error::Syntax {
        message: message(error),
        line: error.line(),
        column: error.column(),
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

/// The longest custom message passed on; longer ones are cut.
const MAX_CUSTOM: usize = 200;

/// Rewrites one of serde's data errors into our wording. Serde's messages
/// quote the submitted value and name Rust types ("invalid type: string
/// \"x\", expected u32"); only the expectation is kept, reworded.
fn describe(message: &str, at: &mut String) -> Invalid {
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.rfind(", expected ").map_or("", |i| &rest[i + 11..]);
        return Invalid::new(
            "type",
            expectation(expected).unwrap_or(Cow::Borrowed("has the wrong type")),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest.rfind(", expected ").map_or("", |i| &rest[i + 11..]);
        let code = if integer_range(expected).is_some() {
            "range"
        } else {
            "invalid"
        };
        return Invalid::new(
            code,
            expectation(expected).unwrap_or(Cow::Borrowed("is invalid")),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        let expected = rest.find(", expected ").map_or("", |i| &rest[i + 11..]);
        let n = expected
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<usize>().ok());
        return match n {
            Some(1) => Invalid::new("length", "must have exactly 1 item"),
            Some(n) => Invalid::new("length", format!("must have exactly {n} items")),
            None => Invalid::new("length", "has the wrong number of items"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.rfind("`, expected ").map(|i| &rest[i + 12..]);
        return match expected {
            Some(list) => Invalid::new("enum", format!("must be {list}")),
            None => Invalid::new("enum", "is not an allowed value"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let end = rest
            .rfind("`, expected ")
            .or_else(|| rest.rfind("`, there are no fields"));
        if let Some(end) = end {
            append_field(at, &rest[..end]);
        }
        return unknown_field();
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        pointer::push_key(at, field);
        return Invalid::new("required", "is required");
    }
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        append_field(at, field);
        return Invalid::new("duplicate", "must appear only once");
    }
    if message.starts_with("data did not match any variant of untagged enum") {
        return Invalid::new("type", "does not match any allowed shape");
    }
    // A custom message, from a type's own Deserialize or TryFrom error (such
    // as a domain newtype's "must be between 0 and 100"): its author's words.
    let mut detail = message.to_owned();
    if detail.len() > MAX_CUSTOM {
        let mut end = MAX_CUSTOM;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    Invalid::new("invalid", detail)
}

/// Adds `field` to the pointer unless serde_path_to_error already did.
fn append_field(at: &mut String, field: &str) {
    let mut last = String::new();
    pointer::push_key(&mut last, field);
    if !at.ends_with(&last) {
        at.push_str(&last);
    }
}

fn integer_range(expected: &str) -> Option<(&'static str, &'static str)> {
    Some(match expected {
        "u8" => ("0", "255"),
        "u16" => ("0", "65535"),
        "u32" => ("0", "4294967295"),
        "u64" | "usize" => ("0", "18446744073709551615"),
        "u128" => ("0", "340282366920938463463374607431768211455"),
        "i8" => ("-128", "127"),
        "i16" => ("-32768", "32767"),
        "i32" => ("-2147483648", "2147483647"),
        "i64" | "isize" => ("-9223372036854775808", "9223372036854775807"),
        "i128" => (
            "-170141183460469231731687303715884105728",
            "170141183460469231731687303715884105727",
        ),
        _ => return None,
    })
}

/// "must be ..." for serde's description of what it expected, without Rust
/// type names.
fn expectation(expected: &str) -> Option<Cow<'static, str>> {
    if let Some((min, max)) = integer_range(expected) {
        return Some(Cow::Owned(format!(
            "must be an integer from {min} to {max}"
        )));
    }
    let fixed = match expected {
        "f32" | "f64" => "must be a number",
        "a string" | "a borrowed string" | "string" => "must be a string",
        "a character" | "char" => "must be a single character",
        "a boolean" | "bool" => "must be true or false",
        "a sequence" => "must be an array",
        "a map" => "must be an object",
        "unit" => "must be null",
        "a byte array" | "byte array" | "a borrowed byte array" => "must be an array of bytes",
        e if e.starts_with("struct ") || e.starts_with("struct variant ") => "must be an object",
        e if e.starts_with("a tuple") || e.starts_with("tuple ") || e.starts_with("an array") => {
            "must be an array"
        }
        e if e.starts_with("unit struct ") => "must be null",
        e if e.starts_with("enum ") || e.ends_with(" identifier") => {
            "must be one of the allowed values"
        }
        // A description written for people by the type's author.
        e if e.starts_with("a ") || e.starts_with("an ") => {
            return Some(Cow::Owned(format!("must be {e}")));
        }
        _ => return None,
    };
    Some(Cow::Borrowed(fixed))
}

#[cfg(all(feature = "axum", feature = "http"))]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract {
    use axum_core::extract::FromRequestParts;
    use http::StatusCode;
    use http::request::Parts;

    use super::{RawBody, Validated};
    use crate::problem::Problem;

    fn missing() -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
            .with_detail("request validation is not configured for this route")
    }

    impl<S, T> FromRequestParts<S> for Validated<T>
    where
        S: Send + Sync,
        T: Clone + Send + Sync + 'static,
    {
        type Rejection = Problem;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .remove::<Validated<T>>()
                .ok_or_else(missing)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for RawBody {
        type Rejection = Problem;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<RawBody>()
                .cloned()
                .ok_or_else(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_serde_messages_without_values_or_type_names() {
        let cases = [
            (
                "invalid type: string \"x, expected y\", expected u32",
                "type",
                "must be an integer from 0 to 4294967295",
                "",
            ),
            (
                "invalid value: integer `300`, expected u8",
                "range",
                "must be an integer from 0 to 255",
                "",
            ),
            (
                "invalid type: map, expected struct Item",
                "type",
                "must be an object",
                "",
            ),
            (
                "invalid type: integer `1`, expected a sequence",
                "type",
                "must be an array",
                "",
            ),
            (
                "invalid length 2, expected a tuple of size 3",
                "length",
                "must have exactly 3 items",
                "",
            ),
            (
                "unknown variant `zz`, expected one of `a`, `b`",
                "enum",
                "must be one of `a`, `b`",
                "",
            ),
            ("missing field `qty`", "required", "is required", "/qty"),
            (
                "unknown field `x/y`, expected `a`",
                "unknown_field",
                "is not allowed",
                "/x~1y",
            ),
            (
                "invalid type: null, expected a date in RFC 3339 format",
                "type",
                "must be a date in RFC 3339 format",
                "",
            ),
            (
                "invalid type: string \"a\", expected Thing",
                "type",
                "has the wrong type",
                "",
            ),
        ];
        for (message, code, detail, ptr) in cases {
            let mut at = String::new();
            let invalid = describe(message, &mut at);
            assert_eq!(
                (invalid.code(), invalid.detail(), at.as_str()),
                (code, detail, ptr),
                "{message}"
            );
        }
    }
}
