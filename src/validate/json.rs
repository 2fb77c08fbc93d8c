//! Typed JSON bodies: the parse, and serde's errors as violations.

use std::num::NonZeroUsize;

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::config::UnknownFields;
use super::error::Error;
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
