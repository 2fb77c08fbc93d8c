//! serde's error messages in our words: what was expected, never the
//! submitted value nor a Rust type name.

use std::borrow::Cow;

use super::pointer;
use super::violations::Invalid;

/// serde_json's message without its " at line L column C" suffix.
pub(crate) fn message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

/// The violation of a member the target type does not declare.
pub(crate) fn unknown_field() -> Invalid {
    Invalid::new("unknown_field", "is not allowed")
}

/// The longest custom message passed on; longer ones are cut.
const MAX_CUSTOM: usize = 200;

/// Rewrites one of serde's data errors into our wording. Serde's messages
/// quote the submitted value and name Rust types ("invalid type: string
/// \"x\", expected u32"); only the expectation is kept, reworded.
pub(crate) fn describe(message: &str, at: &mut String) -> Invalid {
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
