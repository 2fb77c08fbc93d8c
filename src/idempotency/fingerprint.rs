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
    /// For a body that parses as JSON: its canonical form (object members
    /// sorted by name, no insignificant whitespace, strings re-escaped one
    /// way), so a client that re-serialises the same payload with other
    /// member order, spacing or escapes is not refused.
    ///
    /// Numbers count by their exact text, never through a float: `1` and
    /// `1.0`, or `100` and `1e2`, differ, and so do two integers past 2^53
    /// that a float would round to one. A client re-serialising the same
    /// value writes the same text, so this only refuses what might be
    /// another amount.
    ///
    /// An object with two members of the same name is refused with `400`
    /// ([`Error::DuplicateMember`](super::Error::DuplicateMember)): parsers
    /// disagree on which one counts, so the handler might read another
    /// request than the fingerprint saw. A body that is not JSON, or nests
    /// deeper than 128 arrays and objects, falls back to its exact bytes.
    CanonicalJson,
}

/// A JSON body with two members of the same name in one object, refused in
/// [`FingerprintMode::CanonicalJson`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate member {name:?} in the json body")]
pub struct DuplicateMember {
    name: String,
}

impl DuplicateMember {
    /// The repeated member name (its first 64 characters).
    pub fn name(&self) -> &str {
        &self.name
    }
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
    ///
    /// # Errors
    ///
    /// [`DuplicateMember`] when `mode` is [`FingerprintMode::CanonicalJson`]
    /// and the body is JSON with a repeated member name.
    pub fn compute(
        parts: &Parts,
        headers: &[HeaderName],
        body: &[u8],
        mode: FingerprintMode,
    ) -> Result<Self, DuplicateMember> {
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
                Canonical::Json(canonical) => {
                    h.update([1]);
                    field(&mut h, &canonical);
                }
                Canonical::NotJson => {
                    h.update([0]);
                    field(&mut h, body);
                }
                Canonical::Duplicate(name) => return Err(DuplicateMember { name }),
            },
            FingerprintMode::Exact => {
                h.update([0]);
                field(&mut h, body);
            }
        }
        Ok(Self(h.finalize().into()))
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// As deep as serde_json parses by default; deeper bodies are fingerprinted
/// by their bytes, and the recursion below stays shallow.
const MAX_DEPTH: usize = 128;
/// The longest member name a [`DuplicateMember`] carries into errors and logs.
const MAX_NAME_CHARS: usize = 64;

enum Canonical {
    Json(Vec<u8>),
    NotJson,
    Duplicate(String),
}

/// The canonical form of a JSON body, in one pass over its bytes: no value
/// goes through `serde_json::Value`, whose numbers are `f64` unless the
/// crate-wide `arbitrary_precision` feature is on, and whose maps keep one
/// of two duplicate members silently.
fn canonical_json(body: &[u8]) -> Canonical {
    let mut parser = Parser {
        s: body,
        pos: 0,
        duplicate: None,
    };
    let mut out = Vec::with_capacity(body.len());
    if parser.value(&mut out, 0).is_none() {
        return Canonical::NotJson;
    }
    parser.skip_ws();
    if parser.pos != body.len() {
        return Canonical::NotJson;
    }
    match parser.duplicate {
        Some(name) => Canonical::Duplicate(name),
        None => Canonical::Json(out),
    }
}

/// A recursive-descent JSON reader that writes the canonical form as it
/// goes. `None` means "not JSON" (or too deep).
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// The first repeated member name; parsing goes on so that a body that
    /// is not JSON after all still falls back to its bytes.
    duplicate: Option<String>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out, depth + 1),
            b'[' => self.array(out, depth + 1),
            b'"' => {
                let text = self.string()?;
                write_string(out, &text);
                Some(())
            }
            b'-' | b'0'..=b'9' => self.number(out),
            b't' => self.literal(out, b"true"),
            b'f' => self.literal(out, b"false"),
            b'n' => self.literal(out, b"null"),
            _ => None,
        }
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // `{`
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        if self.eat(b'}').is_none() {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let name = self.string()?;
                self.eat(b':')?;
                let mut value = Vec::new();
                self.value(&mut value, depth)?;
                members.push((name, value));
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        // Names compare as UTF-8 bytes, the order of `String`'s `Ord`.
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if self.duplicate.is_none()
            && let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0)
        {
            self.duplicate = Some(pair[0].0.chars().take(MAX_NAME_CHARS).collect());
        }
        out.push(b'{');
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, name);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Some(())
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // `[`
        out.push(b'[');
        if self.eat(b']').is_none() {
            loop {
                self.value(out, depth)?;
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
                out.push(b',');
            }
        }
        out.push(b']');
        Some(())
    }

    /// A string token, unescaped: serde_json checks the escapes, control
    /// characters, surrogates and UTF-8 of the token this finds the end of.
    fn string(&mut self) -> Option<String> {
        let start = self.pos;
        let mut i = start + 1;
        loop {
            match self.s.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        serde_json::from_slice(&self.s[start..self.pos]).ok()
    }

    /// A number, kept as its text once its grammar is checked:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.s.get(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.s.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.s.get(self.pos) {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        out.extend_from_slice(&self.s[start..self.pos]);
        Some(())
    }

    fn digits(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    fn literal(&mut self, out: &mut Vec<u8>, word: &[u8]) -> Option<()> {
        self.s[self.pos..].starts_with(word).then_some(())?;
        self.pos += word.len();
        out.extend_from_slice(word);
        Some(())
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a string serialises into a Vec");
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
            Fingerprint::compute(&p, &[], body.as_bytes(), FingerprintMode::CanonicalJson).unwrap()
        };
        assert_eq!(
            fp(r#"{"a":1,"b":{"c":2,"d":[1,2]}}"#),
            fp("{ \"b\": {\"d\":[1, 2], \"c\":2},\n \"a\": 1 }")
        );
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":2}"#));
        assert_ne!(fp(r#"[1,2]"#), fp(r#"[2,1]"#));
        let exact = |body: &str| {
            Fingerprint::compute(&p, &[], body.as_bytes(), FingerprintMode::Exact).unwrap()
        };
        assert_ne!(exact(r#"{"a":1,"b":2}"#), exact(r#"{"b":2,"a":1}"#));
    }

    #[test]
    fn method_target_and_chosen_headers_count() {
        let a =
            Fingerprint::compute(&parts("POST", "/a"), &[], b"x", FingerprintMode::Exact).unwrap();
        assert_ne!(
            a,
            Fingerprint::compute(&parts("PATCH", "/a"), &[], b"x", FingerprintMode::Exact).unwrap()
        );
        assert_ne!(
            a,
            Fingerprint::compute(&parts("POST", "/a?x=1"), &[], b"x", FingerprintMode::Exact)
                .unwrap()
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
            )
            .unwrap(),
            Fingerprint::compute(&with_header, &[name], b"x", FingerprintMode::Exact).unwrap()
        );
    }
}
