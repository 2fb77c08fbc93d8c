//! Typed JSON bodies: the parse, and serde's errors as violations.

use std::cell::Cell;
use std::num::NonZeroUsize;

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::config::UnknownFields;
use super::error::Error;
use super::ignored;
use super::pointer;
use super::violations::{Invalid, Validate, Violation, Violations};
use super::wording::{describe, message, unknown_field};

/// Parses and validates `bytes` as a `T`.
pub(crate) fn parse<T, E>(
    bytes: &[u8],
    unknown: UnknownFields,
    max_errors: NonZeroUsize,
) -> Result<T, Error<E>>
where
    T: DeserializeOwned + Validate,
{
    let mut violations = Violations::with_max(max_errors);
    let value: T = match fast(bytes, unknown) {
        Some(value) => value,
        // Malformed, wrong, or with unknown members to list: parse again,
        // slowly, for the pointers and the exact error.
        None => parse_tracked(bytes, unknown, &mut violations)?,
    };
    value.validate(&mut violations);
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(Error::Invalid(violations))
    }
}

/// The fast path, for a body that is a `T` with no unknown member to list:
/// no pointer tracking (which copies every key), and one UTF-8 check of the
/// whole body instead of one per string. `None` for any other body.
fn fast<T: DeserializeOwned>(bytes: &[u8], unknown: UnknownFields) -> Option<T> {
    // A body that is not UTF-8 is malformed JSON: the slow path, which reads
    // bytes, says where.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = match unknown {
        UnknownFields::Allow => T::deserialize(&mut de).ok()?,
        UnknownFields::Reject => {
            let ignored = Cell::new(false);
            let value = ignored::deserialize(&mut de, &ignored).ok()?;
            if ignored.get() {
                return None;
            }
            value
        }
    };
    de.end().ok()?;
    Some(value)
}

fn record_unknown(violations: &mut Violations, path: &serde_ignored::Path<'_>) {
    let pointer = if violations.is_full() {
        String::new() // only counted
    } else {
        pointer::from_ignored(path)
    };
    violations.push(Violation::at_pointer(pointer, unknown_field()));
}

/// The slow path: the same parse, tracking the path for the error's pointer
/// and recording every unknown member when they are rejected.
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
    let value = match result {
        Ok(value) => value,
        Err(error) => return Err(reject(bytes, error, std::mem::take(violations))),
    };
    de.end().map_err(|error| syntax(&error))?;
    Ok(value)
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
    if invalid.code() == "duplicate" {
        // Parsers disagree on which of the two counts: not a value to fix
        // but an ambiguous body.
        return Error::DuplicateMember { pointer: at };
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Order {
        customer: String,
        items: Vec<Item>,
        #[serde(default)]
        tags: BTreeMap<String, u32>,
        #[serde(default)]
        shipping: Option<Item>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Item {
        sku: String,
        quantity: u32,
    }

    impl Validate for Order {}

    /// The fast path takes a body only when the slow path finds it clean,
    /// and then yields the same value.
    #[test]
    fn the_fast_path_takes_only_bodies_the_slow_path_accepts() {
        let bodies: [&[u8]; 9] = [
            br#"{"customer": "ada", "items": [{"sku": "a", "quantity": 1}]}"#,
            br#"{"customer": "ad\u00e9", "items": [], "tags": {"x": 1}, "shipping": {"sku": "s", "quantity": 2}}"#,
            br#"{"customer": "ada", "items": [{"sku": "a", "quantity": 1, "colour": "red"}]}"#,
            br#"{"customer": "ada", "items": [], "shipping": {"sku": "s", "quantity": 2, "x": null}}"#,
            br#"{"customer": "ada", "items": [], "extra": {"deep": [1, 2]}}"#,
            br#"{"customer": "ada", "items": []} trailing"#,
            br#"{"customer": "ada", "items": [{"sku": "a", "quantity": -1}]}"#,
            b"{\"customer\": \"\xff\", \"items\": []}",
            br#"{"customer": "ada", "customer": "bob", "items": []}"#,
        ];
        for unknown in [UnknownFields::Allow, UnknownFields::Reject] {
            for body in bodies {
                let mut violations = Violations::new();
                let slow = parse_tracked::<Order, ()>(body, unknown, &mut violations);
                let clean = slow.is_ok() && violations.is_empty();
                match fast::<Order>(body, unknown) {
                    Some(value) => {
                        assert!(clean, "{unknown:?} {}", String::from_utf8_lossy(body));
                        assert_eq!(Some(value), slow.ok());
                    }
                    None => assert!(!clean, "{unknown:?} {}", String::from_utf8_lossy(body)),
                }
            }
        }
    }
}
