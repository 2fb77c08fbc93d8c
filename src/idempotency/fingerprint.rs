//! Request fingerprints: a SHA-256 of what makes two requests "the same".

use http::header::HeaderName;
use http::request::Parts;
use sha2::{Digest, Sha256};

/// How the request body enters the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FingerprintMode {
    /// The exact body bytes (default).
    #[default]
    Exact,
    /// For a body that parses as JSON: its canonical form (object keys
    /// sorted, no insignificant whitespace), so a client that re-serialises
    /// the same payload with other key order or spacing is not refused. A
    /// body that is not JSON falls back to its exact bytes.
    CanonicalJson,
}

/// A request fingerprint (SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub(crate) [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", super::key::hex(&self.0))
    }
}

impl Fingerprint {
    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a fingerprint from stored bytes; `None` unless exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Fingerprints method, path and query, the values of `headers` (in the
    /// given order) and the body.
    pub fn compute(
        parts: &Parts,
        headers: &[HeaderName],
        body: &[u8],
        mode: FingerprintMode,
    ) -> Self {
        let mut h = Sha256::new();
        // Every variable-length field is length-prefixed so no two different
        // requests hash the same bytes.
        field(&mut h, parts.method.as_str().as_bytes());
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        field(&mut h, target.as_bytes());
        for name in headers {
            field(&mut h, name.as_str().as_bytes());
            let values = parts.headers.get_all(name);
            h.update((values.iter().count() as u64).to_be_bytes());
            for value in values {
                field(&mut h, value.as_bytes());
            }
        }
        match mode {
            FingerprintMode::CanonicalJson => match canonical_json(body) {
                Some(canonical) => {
                    h.update([1]);
                    field(&mut h, &canonical);
                }
                None => {
                    h.update([0]);
                    field(&mut h, body);
                }
            },
            FingerprintMode::Exact => {
                h.update([0]);
                field(&mut h, body);
            }
        }
        Self(h.finalize().into())
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// serde_json's `Map` is a `BTreeMap` unless `preserve_order` is on, so
/// re-serialising a parsed value sorts keys; sort explicitly anyway so the
/// fingerprint cannot change if some other crate turns that feature on.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&sorted(value)).ok()
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace_but_not_values() {
        let p = parts("POST", "/orders");
        let fp = |body: &str| {
            Fingerprint::compute(&p, &[], body.as_bytes(), FingerprintMode::CanonicalJson)
        };
        assert_eq!(
            fp(r#"{"a":1,"b":{"c":2,"d":[1,2]}}"#),
            fp("{ \"b\": {\"d\":[1, 2], \"c\":2},\n \"a\": 1 }")
        );
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":2}"#));
        assert_ne!(fp(r#"[1,2]"#), fp(r#"[2,1]"#));
        let exact =
            |body: &str| Fingerprint::compute(&p, &[], body.as_bytes(), FingerprintMode::Exact);
        assert_ne!(exact(r#"{"a":1,"b":2}"#), exact(r#"{"b":2,"a":1}"#));
    }

    #[test]
    fn method_target_and_chosen_headers_count() {
        let a = Fingerprint::compute(&parts("POST", "/a"), &[], b"x", FingerprintMode::Exact);
        assert_ne!(
            a,
            Fingerprint::compute(&parts("PATCH", "/a"), &[], b"x", FingerprintMode::Exact)
        );
        assert_ne!(
            a,
            Fingerprint::compute(&parts("POST", "/a?x=1"), &[], b"x", FingerprintMode::Exact)
        );
        let mut with_header = parts("POST", "/a");
        with_header
            .headers
            .insert("x-tenant", "t1".parse().unwrap());
        let name = HeaderName::from_static("x-tenant");
        assert_ne!(
            Fingerprint::compute(
                &parts("POST", "/a"),
                std::slice::from_ref(&name),
                b"x",
                FingerprintMode::Exact
            ),
            Fingerprint::compute(&with_header, &[name], b"x", FingerprintMode::Exact)
        );
    }
}
