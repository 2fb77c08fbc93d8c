//! Property tests of the JSON path: whatever the bytes, a 400, 413, 415 or
//! 422 (or a pass), never a panic.

use http::StatusCode;
use palisade::problem::IntoProblem;
use palisade::validate::ValidateLayer;
use proptest::prelude::*;

use crate::common::*;

fn status(body: &[u8]) -> StatusCode {
    match ValidateLayer::new().json::<Order>().parse(body) {
        Ok(_) => StatusCode::OK,
        Err(error) => error.into_problem().status(),
    }
}

fn json_ish() -> impl Strategy<Value = String> {
    // Fragments of the order shape, glued at random: mostly near-valid JSON.
    let fragment = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just(r#""customer""#.to_owned()),
        Just(r#""items""#.to_owned()),
        Just(r#""sku""#.to_owned()),
        Just(r#""quantity""#.to_owned()),
        Just(r#""price""#.to_owned()),
        Just(r#""minor""#.to_owned()),
        Just(r#""currency""#.to_owned()),
        Just(r#""discount""#.to_owned()),
        Just(r#""tags""#.to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        Just(r#""\ud800""#.to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "\"[a-zA-Z0-9 /~\\\\-]{0,8}\"",
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let s = status(&body);
        prop_assert!(s == StatusCode::OK || s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY, "{s}");
    }

    #[test]
    fn json_ish_strings_never_panic(body in json_ish()) {
        let s = status(body.as_bytes());
        prop_assert!(s == StatusCode::OK || s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY, "{s}");
        // Anything that is not JSON by the grammar is a 400, never a 422
        // (a number out of range, such as 1e400, is grammatical).
        if serde_json::from_str::<&serde_json::value::RawValue>(&body).is_err() {
            prop_assert_eq!(s, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn valid_orders_with_mutated_values_never_panic(quantity in any::<i64>(), minor in any::<i64>(), customer in ".{0,80}", currency in "[A-Za-z]{0,4}") {
        let body = serde_json::json!({
            "customer": customer,
            "items": [{"sku": "A-1", "quantity": quantity, "price": {"minor": minor, "currency": currency}}],
        }).to_string();
        let s = status(body.as_bytes());
        let valid = (1..=100).contains(&quantity) && minor >= 0 && currency.len() == 3
            && currency.bytes().all(|b| b.is_ascii_uppercase()) && (1..=64).contains(&customer.chars().count());
        prop_assert_eq!(s, if valid { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The whole service, with arbitrary headers and limits.
    #[test]
    fn the_service_answers_only_known_statuses(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        content_type in prop_oneof![Just("application/json"), Just("text/plain"), Just("")],
        limit in 0usize..300,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let a = rt.block_on(async {
            let mut req = json_request(body);
            if content_type.is_empty() {
                req.headers_mut().remove(http::header::CONTENT_TYPE);
            } else {
                req.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            }
            send_json(ValidateLayer::new().body_limit(limit).json::<Order>(), req).await
        });
        let allowed = [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNSUPPORTED_MEDIA_TYPE, StatusCode::UNPROCESSABLE_ENTITY];
        prop_assert!(allowed.contains(&a.status), "{}", a.status);
        if a.status != StatusCode::OK {
            prop_assert_eq!(&a.headers[http::header::CONTENT_TYPE], "application/problem+json");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every pointer resolves, by serde_json's own RFC 6901 lookup, to the
    /// offending value in the submitted document, whatever the keys hold.
    #[test]
    fn pointers_resolve_in_the_submitted_document(key in "[a-z/~0-9 ]{0,6}", unknown in "[a-z/~]{1,6}", bad in 11u32..1000) {
        let body = serde_json::json!({
            "customer": "a",
            "items": [{"sku": "A", "quantity": 1, "price": {"minor": 1, "currency": "EUR"}}],
            "tags": {key.clone(): bad},
            format!("x{unknown}"): true,
        });
        let error = ValidateLayer::new().json::<Order>().parse(body.to_string().as_bytes()).unwrap_err();
        let violations = error.violations().unwrap();
        prop_assert_eq!(violations.total(), 2);
        for v in violations {
            let pointer = v.pointer().unwrap();
            prop_assert!(body.pointer(pointer).is_some(), "{} does not resolve", pointer);
        }
        prop_assert_eq!(body.pointer(violations.as_slice()[1].pointer().unwrap()), Some(&serde_json::json!(bad)));
    }
}
