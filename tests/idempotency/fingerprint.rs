//! Canonical JSON fingerprints: key order and whitespace never matter,
//! values always do.

use http::Request;
use palisade::idempotency::{Fingerprint, FingerprintMode};
use proptest::prelude::*;

fn fingerprint(body: &str) -> Fingerprint {
    let (parts, ()) = Request::post("/orders").body(()).unwrap().into_parts();
    Fingerprint::compute(&parts, &[], body.as_bytes(), FingerprintMode::CanonicalJson).unwrap()
}

/// Writes `entries` as a JSON object in the given order with `space`
/// between every token.
fn object(entries: &[(String, i64)], order: &[usize], space: &str) -> String {
    let members: Vec<String> = order
        .iter()
        .map(|&i| {
            let (k, v) = &entries[i];
            format!(
                "{space}{}{space}:{space}{v}{space}",
                serde_json::to_string(k).unwrap()
            )
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

fn entries() -> impl Strategy<Value = Vec<(String, i64)>> {
    prop::collection::btree_map("[a-z\u{e9}\"\\\\]{1,8}", any::<i64>(), 1..12)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint(
        entries in entries(),
        seed in any::<u64>(),
        space in prop::sample::select(vec!["", " ", "\n", "\t ", "  \r\n"]),
    ) {
        let sorted: Vec<usize> = (0..entries.len()).collect();
        let mut shuffled = sorted.clone();
        // A deterministic permutation from the seed.
        shuffled.sort_by_key(|i| (*i as u64).wrapping_mul(seed | 1).rotate_left((seed % 63) as u32));
        prop_assert_eq!(
            fingerprint(&object(&entries, &sorted, "")),
            fingerprint(&object(&entries, &shuffled, space))
        );
    }

    #[test]
    fn a_changed_value_changes_the_fingerprint(entries in entries(), which in any::<prop::sample::Index>(), delta in 1i64..1000) {
        let order: Vec<usize> = (0..entries.len()).collect();
        let mut changed = entries.clone();
        let i = which.index(changed.len());
        changed[i].1 = changed[i].1.wrapping_add(delta);
        prop_assert_ne!(fingerprint(&object(&entries, &order, "")), fingerprint(&object(&changed, &order, "")));
    }
}

fn outcome(body: &[u8]) -> Result<Fingerprint, palisade::idempotency::DuplicateMember> {
    let (parts, ()) = Request::post("/orders").body(()).unwrap().into_parts();
    Fingerprint::compute(&parts, &[], body, FingerprintMode::CanonicalJson)
}

#[test]
fn integers_past_what_a_float_holds_differ_by_their_text() {
    assert_ne!(
        fingerprint(r#"{"amount":20000000000000000001}"#),
        fingerprint(r#"{"amount":20000000000000000002}"#)
    );
    assert_ne!(
        fingerprint(r#"[9007199254740993]"#),
        fingerprint(r#"[9007199254740992]"#)
    );
    assert_ne!(
        fingerprint(r#"[0.1]"#),
        fingerprint(r#"[0.10000000000000001]"#)
    );
    // Another spelling of the same number is another text: documented.
    assert_ne!(fingerprint(r#"{"a":1}"#), fingerprint(r#"{"a":1.0}"#));
    assert_ne!(fingerprint(r#"{"a":100}"#), fingerprint(r#"{"a":1e2}"#));
    assert_eq!(
        fingerprint(r#"{"b":20000000000000000001, "a":[1.50,-0,1E+400]}"#),
        fingerprint("{\"a\":[1.50 ,-0, 1E+400],\n\"b\":20000000000000000001}")
    );
}

#[test]
fn escapes_and_member_order_are_normalised() {
    assert_eq!(
        fingerprint(r#"{"caf\u00e9":"\u0041\/b","z":[true,null]}"#),
        fingerprint(r#"{ "z" : [ true , null ] , "café" : "A/b" }"#)
    );
    assert_ne!(fingerprint(r#"{"a":"x"}"#), fingerprint(r#"{"a":"X"}"#));
    assert_ne!(fingerprint(r#"{"a":[]}"#), fingerprint(r#"{"a":{}}"#));
}

#[test]
fn duplicate_members_are_refused_at_any_depth() {
    for body in [
        r#"{"amount":1,"amount":2}"#,
        r#"{"amount":1,"amount":1}"#,
        r#"[{"x":{"a":1,"b":2,"\u0061":3}}]"#,
    ] {
        assert!(outcome(body.as_bytes()).is_err(), "{body}");
    }
    let err = outcome(br#"{"amount":1,"amount":2}"#).unwrap_err();
    assert_eq!(err.name(), "amount");
    // Not JSON after all: exact bytes, never a 400.
    assert!(outcome(br#"{"a":1,"a":2"#).is_ok());
}

#[test]
fn not_json_and_too_deep_fall_back_to_the_bytes() {
    let exact = |body: &[u8]| {
        let (parts, ()) = Request::post("/orders").body(()).unwrap().into_parts();
        Fingerprint::compute(&parts, &[], body, FingerprintMode::Exact).unwrap()
    };
    for body in [
        &b"not json"[..],
        b"{\"a\":01}",
        b"[1,]",
        b"{\"a\" 1}",
        b"\"\\ud800\"",
        b"[1] [2]",
        b"",
        b"\"\x01\"",
    ] {
        assert_eq!(outcome(body).unwrap(), exact(body), "{body:?}");
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_ne!(
        outcome(deep(128).as_bytes()).unwrap(),
        exact(deep(128).as_bytes())
    );
    assert_eq!(
        outcome(deep(129).as_bytes()).unwrap(),
        exact(deep(129).as_bytes())
    );
    // Far deeper than the limit: no stack overflow.
    let open = "[".repeat(1_000_000);
    assert_eq!(outcome(open.as_bytes()).unwrap(), exact(open.as_bytes()));
}

/// A JSON document with number leaves as text (past f64's range and
/// precision too), and objects with distinct member names.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?".prop_map(Json::Number),
        "[a-z\u{e9}\u{1F600}\"\\\\/\n\u{1}]{0,6}".prop_map(Json::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map("[a-z\u{e9}\"]{0,4}", inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `value` as JSON; with `seed` non-zero, members in another order,
/// `space` around tokens and some characters as `\u` escapes.
fn write(value: &Json, seed: u64, space: &str, out: &mut String) {
    let string = |s: &str, out: &mut String| {
        if seed == 0 {
            out.push_str(&serde_json::to_string(s).unwrap());
            return;
        }
        out.push('"');
        for (i, c) in s.chars().enumerate() {
            let escape = (seed >> (i % 64)) & 1 == 1;
            match c {
                '"' | '\\' => out.push_str(&format!("\\{c}")),
                c if (c as u32) < 0x20 || (escape && (c as u32) < 0x10000) => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
    };
    out.push_str(space);
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::Str(s) => string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, seed, space, out);
            }
            out.push_str(space);
            out.push(']');
        }
        Json::Object(members) => {
            let mut order: Vec<usize> = (0..members.len()).collect();
            if seed != 0 {
                order.sort_by_key(|i| {
                    (*i as u64)
                        .wrapping_mul(seed | 1)
                        .rotate_left((seed % 63) as u32)
                });
            }
            out.push('{');
            for (n, &i) in order.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(space);
                string(&members[i].0, out);
                out.push_str(space);
                out.push(':');
                write(&members[i].1, seed, space, out);
            }
            out.push_str(space);
            out.push('}');
        }
    }
    out.push_str(space);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = outcome(&body);
    }

    #[test]
    fn almost_json_never_panics(value in json(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut text = String::new();
        write(&value, 0, "", &mut text);
        let mut body = text.into_bytes();
        let i = cut.index(body.len() + 1);
        body.insert(i, byte);
        let _ = outcome(&body);
        body.truncate(i);
        let _ = outcome(&body);
    }

    #[test]
    fn reserialising_any_value_keeps_its_fingerprint(
        value in json(),
        seed in 1..u64::MAX,
        space in prop::sample::select(vec!["", " ", "\n", "\t ", "  \r\n"]),
    ) {
        let (mut plain, mut shuffled) = (String::new(), String::new());
        write(&value, 0, "", &mut plain);
        write(&value, seed, space, &mut shuffled);
        let canonical = outcome(plain.as_bytes()).unwrap();
        prop_assert_eq!(canonical, outcome(shuffled.as_bytes()).unwrap(), "{} vs {}", plain, shuffled);
        // And it was read as JSON, not fingerprinted by its bytes.
        let (parts, ()) = Request::post("/orders").body(()).unwrap().into_parts();
        prop_assert_ne!(canonical, Fingerprint::compute(&parts, &[], plain.as_bytes(), FingerprintMode::Exact).unwrap());
    }
}

#[tokio::test]
async fn duplicate_members_are_a_400_before_anything_runs() {
    use crate::common::{answer, harness, post, send};
    use http::StatusCode;
    use palisade::idempotency::IdempotencyLayer;
    use palisade::problem::types;

    let layer = IdempotencyLayer::new().fingerprint_mode(FingerprintMode::CanonicalJson);
    let (app, count) = harness(layer, answer(StatusCode::CREATED, "{}"));
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    let refused = send(&app, post(Some(key), r#"{"amount":1,"amount":1000}"#)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.problem_type(), types::DUPLICATE_MEMBER);
    assert_eq!(count.get(), 0);
    // Nothing was claimed: the corrected request runs under the same key.
    let fixed = send(&app, post(Some(key), r#"{"amount":1000}"#)).await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert_eq!(count.get(), 1);
}
