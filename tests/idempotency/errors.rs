//! The errors: `Display` says what failed, `source()` says why (never both),
//! and every problem takes its `type` from `palisade::problem::types`.

use std::error::Error as _;
use std::time::Duration;

use http::StatusCode;
use palisade::BoxError;
use palisade::idempotency::{Error, IdempotencyKey, InvalidKey, StoreError};
use palisade::problem::{IntoProblem, types};

type E = Error<std::convert::Infallible>;

#[test]
fn display_says_what_failed_and_the_cause_is_only_the_source() {
    let cause: BoxError = "connection reset by peer".into();
    let body = E::Body(cause);
    assert_eq!(body.to_string(), "failed to read the request body");
    assert_eq!(
        body.source().unwrap().to_string(),
        "connection reset by peer"
    );

    let store = E::Store(StoreError::Timeout(Duration::from_millis(50)));
    assert_eq!(store.to_string(), "store unavailable");
    assert_eq!(
        store.source().unwrap().to_string(),
        "store did not answer within 50ms"
    );

    let invalid = E::InvalidKey(IdempotencyKey::new("").unwrap_err());
    assert_eq!(invalid.to_string(), "invalid idempotency key");
    assert_eq!(
        invalid.source().unwrap().to_string(),
        InvalidKey::Empty.to_string()
    );

    let too_large = E::BodyTooLarge { limit: 1024 };
    assert_eq!(
        too_large.to_string(),
        "request body is larger than 1024 bytes"
    );
    assert!(too_large.source().is_none());
    assert_eq!(E::MissingCallerKey.to_string(), "request has no caller key");
}

#[test]
fn every_problem_has_a_shared_type() {
    let cases: Vec<(E, StatusCode, &str)> = vec![
        (
            E::MissingKey,
            StatusCode::BAD_REQUEST,
            types::MISSING_IDEMPOTENCY_KEY,
        ),
        (
            E::InvalidKey(InvalidKey::TooLong),
            StatusCode::BAD_REQUEST,
            types::INVALID_IDEMPOTENCY_KEY,
        ),
        (
            E::MissingCallerKey,
            StatusCode::BAD_REQUEST,
            types::MISSING_CALLER_KEY,
        ),
        (
            E::BodyTooLarge { limit: 10 },
            StatusCode::PAYLOAD_TOO_LARGE,
            types::BODY_TOO_LARGE,
        ),
        (
            E::Body("cut".into()),
            StatusCode::BAD_REQUEST,
            types::BODY_READ_FAILED,
        ),
        (
            E::InFlight {
                retry_after: Duration::from_millis(1500),
            },
            StatusCode::CONFLICT,
            types::IN_FLIGHT,
        ),
        (
            E::Mismatch,
            StatusCode::UNPROCESSABLE_ENTITY,
            types::KEY_REUSED,
        ),
        (E::NotRetained, StatusCode::GONE, types::NOT_RETAINED),
        (
            E::Store(StoreError::Full),
            StatusCode::SERVICE_UNAVAILABLE,
            types::STORE_UNAVAILABLE,
        ),
        (
            E::Panicked,
            StatusCode::INTERNAL_SERVER_ERROR,
            types::INTERNAL,
        ),
    ];
    for (error, status, type_uri) in cases {
        let shown = error.to_string();
        let problem = error.into_problem();
        assert_eq!(problem.status(), status, "{shown}");
        assert_eq!(problem.type_uri(), type_uri, "{shown}");
    }
}

#[test]
fn a_body_read_failure_does_not_tell_the_client_its_cause() {
    let problem = E::Body("tls: internal detail".into()).into_problem();
    assert_eq!(problem.detail(), Some("failed to read the request body"));
}

#[test]
fn retry_after_is_rounded_up_in_header_and_body() {
    let problem = E::InFlight {
        retry_after: Duration::from_millis(1500),
    }
    .into_problem();
    assert_eq!(problem.headers()[http::header::RETRY_AFTER], "2");
    assert_eq!(
        problem.extension("retry_after"),
        Some(&serde_json::json!(2))
    );

    let store = E::Store(StoreError::Full).into_problem();
    assert_eq!(store.headers()[http::header::RETRY_AFTER], "1");
}
