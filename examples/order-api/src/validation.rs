//! Reading the JSON body of the operator's endpoint (`PUT /admin/faults`).
//!
//! `POST /orders` is checked by palisade's validate layer (`layers.rs`);
//! this module only serves the admin endpoint, which takes JSON whatever
//! its `Content-Type` says (plain `curl -d` sends a form type).

use axum::body::Body;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::errors::ApiError;

/// Largest request body accepted: 64 KiB.
pub const MAX_BODY_BYTES: usize = crate::layers::MAX_BODY_BYTES;

/// Reads a JSON body for an operator's endpoint, where a forgotten
/// `Content-Type` (as plain `curl -d` sends) should not get in the way: the
/// body is JSON whatever the header says.
pub async fn read_json_any_type(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Err(_) => return Err(ApiError::BodyRead),
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// An integer in `min..=max`. A number with a zero fraction (`2.0`) is an
/// integer to JSON Schema, so it is one here too.
pub fn json_integer(v: &Value, min: u64, max: u64) -> Option<u64> {
    let n = v.as_u64().or_else(|| {
        // Exact below 2^53; larger floats are past every limit here anyway.
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9_007_199_254_740_992.0)
            .map(|f| f as u64)
    })?;
    (min..=max).contains(&n).then_some(n)
}
