//! The `Idempotency-Key` header value and the extensions the layer leaves on
//! a claimed request.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use http::header::HeaderName;
use sha2::{Digest, Sha256};

/// The request header that carries the key (IETF httpapi Idempotency-Key draft).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header set on a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted, in bytes (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// A valid idempotency key: 1 to 255 visible ASCII characters.
///
/// The server layer leaves it in the extensions of a request it claimed, so a
/// handler can derive the keys of its own outgoing calls from it
/// ([`IdempotencyKey::derive`]); the client layer
/// ([`IdempotencyKeyLayer`](super::IdempotencyKeyLayer)) sends a key found in
/// a request's extensions.
// An `Arc`: the layer hands the key to the request's extensions, its guard,
// its heartbeat and its completion, and a clone costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<str>);

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The header is present but empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong,
    /// The key holds a byte that is not visible ASCII (`!` to `~`).
    NotVisibleAscii,
    /// The header appears more than once.
    Repeated,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the idempotency key is empty",
            Self::TooLong => "the idempotency key is longer than 255 characters",
            Self::NotVisibleAscii => {
                "the idempotency key holds a character that is not visible ASCII"
            }
            Self::Repeated => "the idempotency-key header appears more than once",
        })
    }
}

impl std::error::Error for InvalidKey {}

impl IdempotencyKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        Self::check(key.as_bytes())?;
        Ok(Self(key.into()))
    }

    /// Validates a header value: a bare key as Stripe sends it
    /// (`Idempotency-Key: 8e03978e-...`), or a structured-field string as
    /// the IETF draft writes it (`Idempotency-Key: "8e03978e-..."`), whose
    /// quotes are removed and `\"`, `\\` escapes undone before the same checks.
    pub fn from_header(value: &HeaderValue) -> Result<Self, InvalidKey> {
        let bytes = value.as_bytes();
        if let [b'"', inner @ .., b'"'] = bytes {
            let key = unquote(inner).ok_or(InvalidKey::NotVisibleAscii)?;
            Self::check(key.as_bytes())?;
            return Ok(Self(key.into()));
        }
        Self::check(bytes)?;
        let key = std::str::from_utf8(bytes).expect("visible ASCII is valid UTF-8");
        Ok(Self(key.into()))
    }

    /// A fresh random key (a UUID v4, as the draft and Stripe suggest).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }

    fn check(bytes: &[u8]) -> Result<(), InvalidKey> {
        if bytes.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(InvalidKey::TooLong);
        }
        if !bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(InvalidKey::NotVisibleAscii);
        }
        Ok(())
    }

    /// A key for one downstream call made on behalf of this request: stable
    /// across retries of this request, distinct per `purpose`, and unguessable
    /// from the original (hex SHA-256 of both).
    ///
    /// ```
    /// use palisade::idempotency::IdempotencyKey;
    ///
    /// let incoming = IdempotencyKey::new("order-42").unwrap();
    /// let charge = incoming.derive("charge");
    /// assert_eq!(charge, incoming.derive("charge"));
    /// assert_ne!(charge, incoming.derive("email"));
    /// ```
    pub fn derive(&self, purpose: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update((self.0.len() as u64).to_be_bytes());
        hasher.update(self.0.as_bytes());
        hasher.update(purpose.as_bytes());
        Self(hex(&hasher.finalize()).into())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("visible ASCII is a valid header value")
    }
}

// Debug output ends up in logs (`?request.extensions()`): it shows the
// key's digest only. Display and `as_str` give the key itself.
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = crate::observability::redact_key(&self.0);
        write!(f, "IdempotencyKey(redacted {digest})")
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing number of the claim a request runs under, left in its
/// extensions by the server layer.
///
/// Every claim of a key gets a number greater than any earlier claim of the
/// same key still known to the store. A handler that writes downstream can
/// pass it along so the downstream refuses writes from an older holder whose
/// lease expired (for example `UPDATE ... WHERE fence < $n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub(crate) u64);

impl Fence {
    /// The fencing number.
    pub fn number(self) -> u64 {
        self.0
    }
}

/// The content of an RFC 8941 sf-string between its quotes; `None` if an
/// escape is not `\"` or `\\`, or a quote is unescaped.
fn unquote(inner: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.iter();
    while let Some(&b) = chars.next() {
        match b {
            b'\\' => match chars.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(char::from(e)),
                _ => return None,
            },
            b'"' => return None,
            _ => out.push(char::from(b)),
        }
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Writes the lowercase hex digits of `bytes` into `out`, two per byte.
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_a_digest_never_the_key() {
        let key = IdempotencyKey::new("order-7f3a9c").unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("order-7f3a9c"), "{debug}");
        let digest = crate::observability::redact_key("order-7f3a9c").to_string();
        assert_eq!(debug, format!("IdempotencyKey(redacted {digest})"));
        assert_eq!(key.to_string(), "order-7f3a9c");
    }
}
