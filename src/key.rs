//! Keys that say whom a request comes from: the caller identity that rate
//! limits and idempotency keys are scoped by.
//!
//! A [`KeyExtractor`] reads a key from a request. Any
//! `Fn(&Req) -> Option<String>` closure is one.

/// Reads the key a request is counted or scoped under.
///
/// Returns `None` when the request carries no key; the layer then applies its
/// configured policy (reject, or fall back to another key).
pub trait KeyExtractor<Req>: Clone + Send + Sync + 'static {
    /// The key of `req`, or `None` when it has none.
    fn extract(&self, req: &Req) -> Option<String>;
}

impl<Req, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn extract(&self, req: &Req) -> Option<String> {
        self(req)
    }
}

/// The caller key a layer took from a request, left in the request's
/// extensions for the layers and the handler inside it, so nothing parses
/// the same headers twice.
///
/// The idempotency layer inserts the key it scopes `Idempotency-Key`s by.
/// In an axum handler, take it with `Extension<CallerKey>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerKey(String);

impl CallerKey {
    /// Wraps a key taken by a [`KeyExtractor`].
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every request under one key, `global`: one bucket for the whole service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl Global {
    /// The one key: `global`.
    pub const KEY: &'static str = "global";
}

impl<Req> KeyExtractor<Req> for Global {
    fn extract(&self, _: &Req) -> Option<String> {
        Some(Self::KEY.to_owned())
    }
}

/// The key of `first`, or when it has none, the key of `second`: for
/// example the API key, else the client IP.
///
/// ```
/// # #[cfg(feature = "http")] {
/// use palisade::key::{ClientIp, Header, KeyExtractor};
///
/// let key = Header::api_key().or(ClientIp::new());
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert("192.0.2.7:4000".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(key.extract(&req).as_deref(), Some("ip:192.0.2.7"));
/// req.headers_mut().insert("x-api-key", "k-123".parse().unwrap());
/// assert_eq!(key.extract(&req).as_deref(), Some("x-api-key:k-123"));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A, B> Or<A, B> {
    /// `first`, falling back to `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }

    /// Falls back further, to `next`.
    pub fn or<N>(self, next: N) -> Or<Self, N> {
        Or::new(self, next)
    }
}

impl<Req, A, B> KeyExtractor<Req> for Or<A, B>
where
    A: KeyExtractor<Req>,
    B: KeyExtractor<Req>,
{
    fn extract(&self, req: &Req) -> Option<String> {
        self.first.extract(req).or_else(|| self.second.extract(req))
    }
}

#[cfg(feature = "http")]
pub use self::http_keys::{Cidr, ClientIp, Header, InvalidCidr};

#[cfg(feature = "http")]
mod http_keys {
    use std::net::{IpAddr, SocketAddr};
    use std::str::FromStr;
    use std::sync::Arc;

    use http::header::{FORWARDED, HeaderName};
    use http::{Extensions, HeaderMap, Request};

    use super::{KeyExtractor, Or};

    // Longer header values are not keys: they would bloat every store entry.
    const MAX_HEADER_KEY_LEN: usize = 256;
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const DEFAULT_IPV6_PREFIX: u8 = 64;

    /// The value of a request header, such as `X-Api-Key`, as the key
    /// `<header-name>:<value>` (the prefix keeps a client from borrowing an
    /// IP's bucket by sending an IP as its API key).
    ///
    /// A header that is missing, empty, not visible ASCII or longer than 256
    /// bytes gives no key. The key shows up in Redis key names; logs show
    /// only its [`redact_key`](crate::observability::redact_key) digest.
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone)]
    pub struct Header {
        name: HeaderName,
    }

    impl Header {
        /// Keys requests by the value of header `name`.
        pub fn new(name: HeaderName) -> Self {
            Self { name }
        }

        /// Keys requests by `X-Api-Key`.
        pub fn api_key() -> Self {
            Self::new(HeaderName::from_static("x-api-key"))
        }

        /// Falls back to `next` when the header is missing.
        pub fn or<N>(self, next: N) -> Or<Self, N> {
            Or::new(self, next)
        }
    }

    impl<B> KeyExtractor<Request<B>> for Header {
        fn extract(&self, req: &Request<B>) -> Option<String> {
            let value = req.headers().get(&self.name)?.to_str().ok()?.trim();
            if value.is_empty() || value.len() > MAX_HEADER_KEY_LEN {
                return None;
            }
            Some(format!("{}:{value}", self.name))
        }
    }

    /// The client IP, as the key `ip:<address>` (`ip:<network>/64` for IPv6).
    ///
    /// The peer address comes from a `SocketAddr` request extension by
    /// default; with axum, read its `ConnectInfo` instead:
    /// `ClientIp::new().peer(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))`.
    ///
    /// `X-Forwarded-For` (or, with [`forwarded`](Self::forwarded), RFC 7239
    /// `Forwarded`) is read only when the peer is one of the
    /// [trusted proxies](Self::trust); then the client is the rightmost hop
    /// that is not a trusted proxy. Hops to its left are written by the
    /// client and never trusted. By default no proxy is trusted and these
    /// headers are ignored. Several header lines are one list, in order, and
    /// empty entries are skipped.
    ///
    /// The headers are read as bytes, entry by entry, so a byte that is not
    /// visible ASCII (which HTTP/1 servers such as hyper accept) spoils only
    /// its own entry: one a client wrote to the left of the proxies' entries
    /// changes nothing. An entry is a node address: `192.0.2.7`,
    /// `192.0.2.7:4000`, `[2001:db8::7]`, `[2001:db8::7]:4000` (in
    /// `Forwarded`, quoted or not), an unbracketed IPv6 address, with a port
    /// of digits or an obfuscated one (`_abc`). An entry that is not an
    /// address (garbage, an obfuscated `Forwarded` node such as `for=_hidden`,
    /// or `for=unknown`) in the client's position keys the request as
    /// `ip:unparsed:<digest>`, 16 hex digits of a fixed hash of the entry's
    /// bytes (of the `for=` value's, as written, for `Forwarded`). So a proxy
    /// that obfuscates its clients must give each client one stable
    /// identifier for it to be limited: one per request is a bucket per
    /// request. That key is never a trusted proxy's: falling back to the
    /// proxy's address would put every such request in the proxy's one
    /// bucket, and a client could borrow it with one odd byte. Rejecting
    /// such requests would refuse all traffic through a proxy that
    /// obfuscates its clients. The position is one a trusted proxy wrote, so
    /// a client cannot vary the entry; where a proxy passes the client's
    /// entries through unchecked, the client could as well write any
    /// address. Commas always separate entries, even inside a quoted
    /// `Forwarded` value, so a quote a client leaves open cannot swallow
    /// the entries the proxies append (a comma in a quoted value spoils its
    /// element instead, as below).
    ///
    /// A proxy may write a client's bytes into its own `Forwarded` element,
    /// as in `host="<Host>";for=<address>`, so within an element `;`
    /// separates pairs only outside quoted strings (with backslash escapes),
    /// and an element whose `for=` the client might have chosen is not read
    /// as an address. In the client's position, an element that names no
    /// single node keys the request by a constant, not by its bytes (which
    /// may be the client's to vary, for a bucket per request):
    ///
    /// - `ip:unparsed:malformed`: a quote anywhere but around a whole value,
    ///   or left open, or text after a closing one;
    /// - `ip:unparsed:ambiguous`: more than one `for=`;
    /// - `ip:unparsed:nofor`: no `for=` at all.
    ///
    /// A client can thus put itself in one of these shared buckets, never in
    /// an address or a bucket of its own. This holds for a proxy that
    /// escapes `"` and `\` in what it quotes, and for one that writes the
    /// client's bytes before its `for=`; one that writes them unescaped after
    /// its `for=` lets a client end the element and append its own.
    ///
    /// IPv6 clients are grouped by their /64 by default, since one host or
    /// one subscriber usually holds a whole /64 and could otherwise take a
    /// fresh bucket for each of its addresses;
    /// [`ipv6_prefix`](Self::ipv6_prefix) changes the prefix (128 keys each
    /// address apart). IPv4 addresses, also when written IPv4-mapped
    /// (`::ffff:192.0.2.7`), key as IPv4 (`ip:192.0.2.7`).
    ///
    /// ```
    /// use palisade::key::{ClientIp, KeyExtractor};
    ///
    /// let key = ClientIp::new().trust(["10.0.0.0/8".parse().unwrap()]);
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("10.1.2.3:443".parse::<std::net::SocketAddr>().unwrap());
    /// req.headers_mut().insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap());
    /// assert_eq!(key.extract(&req).as_deref(), Some("ip:203.0.113.9"));
    /// // An untrusted peer is the client; IPv6 is keyed by its /64.
    /// req.extensions_mut().insert("[2001:db8:0:7::1]:443".parse::<std::net::SocketAddr>().unwrap());
    /// assert_eq!(key.extract(&req).as_deref(), Some("ip:2001:db8:0:7::/64"));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone)]
    pub struct ClientIp {
        trusted: Arc<[Cidr]>,
        forwarded: bool,
        ipv6_prefix: u8,
        peer: fn(&Extensions) -> Option<IpAddr>,
    }

    fn socket_addr_peer(ext: &Extensions) -> Option<IpAddr> {
        ext.get::<SocketAddr>().map(SocketAddr::ip)
    }

    impl Default for ClientIp {
        fn default() -> Self {
            Self::new()
        }
    }

    impl ClientIp {
        /// The peer IP from a `SocketAddr` extension, no trusted proxies,
        /// IPv6 addresses grouped by their /64.
        pub fn new() -> Self {
            Self {
                trusted: Arc::from([]),
                forwarded: false,
                ipv6_prefix: DEFAULT_IPV6_PREFIX,
                peer: socket_addr_peer,
            }
        }

        /// Reads the peer IP with `peer` (for example from axum's
        /// `ConnectInfo<SocketAddr>`).
        #[must_use]
        pub fn peer(mut self, peer: fn(&Extensions) -> Option<IpAddr>) -> Self {
            self.peer = peer;
            self
        }

        /// Trusts proxies in these networks to report the client address.
        #[must_use]
        pub fn trust(mut self, proxies: impl IntoIterator<Item = Cidr>) -> Self {
            let mut trusted = self.trusted.to_vec();
            trusted.extend(proxies);
            self.trusted = trusted.into();
            self
        }

        /// Reads RFC 7239 `Forwarded` from trusted proxies instead of
        /// `X-Forwarded-For`.
        #[must_use]
        pub fn forwarded(mut self) -> Self {
            self.forwarded = true;
            self
        }

        /// Groups IPv6 clients by their first `bits` bits: 64 by default, 128
        /// keys every address apart. See the [type docs](Self) for why.
        ///
        /// # Panics
        ///
        /// If `bits` is 0 or more than 128.
        #[must_use]
        pub fn ipv6_prefix(mut self, bits: u8) -> Self {
            assert!(
                (1..=128).contains(&bits),
                "an IPv6 prefix has 1 to 128 bits"
            );
            self.ipv6_prefix = bits;
            self
        }

        /// Falls back to `next` when there is no peer address.
        pub fn or<N>(self, next: N) -> Or<Self, N> {
            Or::new(self, next)
        }

        /// The client address of a request with these `headers` that came
        /// from `peer` (IPv4-mapped addresses as IPv4), or `None` when the
        /// entry in the client's position is not an address (see the
        /// [type docs](Self); the key is then `ip:unparsed:<digest>`, or
        /// `ip:unparsed:malformed`, `ambiguous` or `nofor` for a `Forwarded`
        /// element that names no single node).
        pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
            match self.hop(peer, headers) {
                Hop::Ip(ip) => Some(ip),
                Hop::Unparsed(_) | Hop::Invalid(_) => None,
            }
        }

        // The rightmost entry that is not a trusted proxy, else the leftmost
        // trusted one, else the peer.
        fn hop<'h>(&self, peer: IpAddr, headers: &'h HeaderMap) -> Hop<'h> {
            let mut client = peer.to_canonical();
            if !self.is_trusted(client) {
                return Hop::Ip(client);
            }
            let name = if self.forwarded {
                FORWARDED
            } else {
                X_FORWARDED_FOR
            };
            // From the right: the last entry of the last line is the one the
            // nearest proxy wrote.
            for value in headers.get_all(name).iter().rev() {
                for entry in value.as_bytes().rsplit(|&b| b == b',') {
                    let entry = entry.trim_ascii();
                    if entry.is_empty() {
                        continue;
                    }
                    let hop = if self.forwarded {
                        forwarded_for(entry)
                    } else {
                        parse_hop(entry)
                    };
                    match hop {
                        Hop::Ip(ip) => {
                            client = ip.to_canonical();
                            if !self.is_trusted(client) {
                                return Hop::Ip(client);
                            }
                        }
                        unparsed => return unparsed,
                    }
                }
            }
            Hop::Ip(client)
        }

        fn is_trusted(&self, ip: IpAddr) -> bool {
            self.trusted.iter().any(|net| net.contains(ip))
        }
    }

    impl<B> KeyExtractor<Request<B>> for ClientIp {
        fn extract(&self, req: &Request<B>) -> Option<String> {
            let peer = (self.peer)(req.extensions())?;
            Some(match self.hop(peer, req.headers()) {
                Hop::Ip(IpAddr::V6(ip)) if self.ipv6_prefix < 128 => {
                    let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                    let net = std::net::Ipv6Addr::from(u128::from(ip) & mask);
                    format!("ip:{net}/{}", self.ipv6_prefix)
                }
                Hop::Ip(ip) => format!("ip:{ip}"),
                Hop::Unparsed(entry) => format!("ip:unparsed:{:016x}", digest(entry)),
                Hop::Invalid(why) => format!("ip:unparsed:{why}"),
            })
        }
    }

    // One entry of a forwarding header: an address, bytes that are not one
    // (keyed by their digest), or a `Forwarded` element that names no single
    // node (keyed by a constant that says why, never by its bytes).
    enum Hop<'h> {
        Ip(IpAddr),
        Unparsed(&'h [u8]),
        Invalid(&'static str),
    }

    // SipHash with fixed keys: the same key in every process and release,
    // so instances sharing a Redis store count one such client together.
    fn digest(entry: &[u8]) -> u64 {
        use std::hash::Hasher;
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        hasher.write(entry);
        hasher.finish()
    }

    // An X-Forwarded-For entry: a node address, unquoted.
    fn parse_hop(entry: &[u8]) -> Hop<'_> {
        match node_address(entry) {
            Some(ip) => Hop::Ip(ip),
            None => Hop::Unparsed(entry),
        }
    }

    // The one `for=` node of an RFC 7239 forwarded-element. A client's bytes
    // inside a quoted value a proxy writes (`host="..."`) must not add a
    // pair, so `;` splits pairs only outside quoted strings; an element that
    // is malformed, or has several `for=` (one may be the client's), or none,
    // is keyed by a constant: its bytes may be the client's to vary.
    fn forwarded_for(element: &[u8]) -> Hop<'_> {
        let mut node = None;
        let mut fors = 0_usize;
        let mut rest = element;
        while !rest.is_empty() {
            let Some(Pair {
                name,
                value,
                rest: next,
            }) = next_pair(rest)
            else {
                return Hop::Invalid("malformed");
            };
            rest = next;
            if value.is_some() && name.trim_ascii().eq_ignore_ascii_case(b"for") {
                fors += 1;
                node = value;
            }
        }
        let node = match (fors, node) {
            (1, Some(node)) => node.trim_ascii(),
            (0, _) => return Hop::Invalid("nofor"),
            _ => return Hop::Invalid("ambiguous"),
        };
        let unquoted = node
            .strip_prefix(b"\"")
            .and_then(|n| n.strip_suffix(b"\""))
            .unwrap_or(node);
        match node_address(unquoted) {
            Some(ip) => Hop::Ip(ip),
            None => Hop::Unparsed(node),
        }
    }

    // One `name=value` pair of a forwarded-element.
    struct Pair<'h> {
        name: &'h [u8],
        value: Option<&'h [u8]>,
        rest: &'h [u8],
    }

    // Splits the first `name=value` pair off `s`: its name, its value (a
    // token, or an RFC 7230 quoted-string with backslash escapes; `None` for
    // a pair without `=`) and what follows its `;`. `None` when a quote
    // stands anywhere but at the start of a value, or is left open: the
    // pairs would depend on how a proxy quoted a client's bytes.
    fn next_pair(s: &[u8]) -> Option<Pair<'_>> {
        let end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let after_end = s.get(end + 1..).unwrap_or(&[]);
        let Some(eq) = s[..end].iter().position(|&b| b == b'=') else {
            // No value, so no quoted string: the `;` does end it.
            let name = &s[..end];
            return (!name.contains(&b'"')).then_some(Pair {
                name,
                value: None,
                rest: after_end,
            });
        };
        let name = &s[..eq];
        if name.contains(&b'"') {
            return None;
        }
        let after = &s[eq + 1..];
        let lead = after.len() - after.trim_ascii_start().len();
        if after.get(lead) != Some(&b'"') {
            let value = &s[eq + 1..end];
            return (!value.contains(&b'"')).then_some(Pair {
                name,
                value: Some(value),
                rest: after_end,
            });
        }
        // A quoted string: up to the first quote not escaped.
        let mut i = lead + 1;
        loop {
            match after.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        let value = Some(&after[lead..=i]);
        match after[i + 1..].trim_ascii_start().split_first() {
            None => Some(Pair {
                name,
                value,
                rest: &[],
            }),
            Some((b';', rest)) => Some(Pair { name, value, rest }),
            Some(_) => None,
        }
    }

    // A node address: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`,
    // `[2001:db8::1]:80`, and an unbracketed IPv6 address too; a port is
    // digits or an RFC 7239 obfuscated port (`_abc`).
    fn node_address(node: &[u8]) -> Option<IpAddr> {
        let node = std::str::from_utf8(node).ok()?;
        if let Some(rest) = node.strip_prefix('[') {
            let (ip, port) = rest.split_once(']')?;
            if !port.is_empty() && !port.strip_prefix(':').is_some_and(is_port) {
                return None;
            }
            return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
        }
        if let Ok(ip) = node.parse::<IpAddr>() {
            return Some(ip);
        }
        let (host, port) = node.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    }

    fn is_port(port: &str) -> bool {
        match port.strip_prefix('_') {
            Some(obfuscated) => {
                !obfuscated.is_empty()
                    && obfuscated
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            None => (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()),
        }
    }

    /// A network, such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is
    /// a network of one.
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Cidr {
        addr: IpAddr,
        bits: u8,
    }

    /// A network that does not parse, or a prefix longer than its address.
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("invalid network {0:?}: expected an address or address/prefix-length")]
    pub struct InvalidCidr(String);

    impl Cidr {
        /// The network of `addr` with a `bits`-bit prefix.
        pub fn new(addr: IpAddr, bits: u8) -> Result<Self, InvalidCidr> {
            let addr = addr.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(InvalidCidr(format!("{addr}/{bits}")));
            }
            Ok(Self { addr, bits })
        }

        /// Whether `ip` is in this network.
        pub fn contains(&self, ip: IpAddr) -> bool {
            match (self.addr, ip.to_canonical()) {
                (IpAddr::V4(net), IpAddr::V4(ip)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                    u32::from(net) & mask == u32::from(ip) & mask
                }
                (IpAddr::V6(net), IpAddr::V6(ip)) => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(self.bits))
                        .unwrap_or(0);
                    u128::from(net) & mask == u128::from(ip) & mask
                }
                _ => false,
            }
        }
    }

    impl FromStr for Cidr {
        type Err = InvalidCidr;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let bad = || InvalidCidr(s.to_owned());
            let (addr, bits) = match s.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
                None => (s, None),
            };
            let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
            let bits = bits.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
            Self::new(addr, bits).map_err(|_| bad())
        }
    }
}

#[cfg(feature = "http")]
pub use self::caller::Caller;

#[cfg(feature = "http")]
mod caller {
    use http::Request;
    use http::header::{AUTHORIZATION, HeaderName};

    use super::{ClientIp, KeyExtractor};

    // Long enough for any JWT a server accepts in a header; the idempotency
    // layer stores only a hash of the key, whatever its length.
    const MAX_CREDENTIAL_LEN: usize = 8 * 1024;
    const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

    /// Who sent a request, by the credential it presents: the default caller
    /// scope of [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer),
    /// and a sensible key for the rate limiter.
    ///
    /// In this order, the first that is present gives the key:
    ///
    /// 1. `X-Api-Key`, as `x-api-key:<value>`: a long-lived account key,
    ///    the most stable identity a request carries (Stripe scopes its
    ///    idempotency keys by it);
    /// 2. `Authorization`, as `authorization:<value>` (a bearer token, Basic
    ///    credentials): after the API key because a token may rotate;
    /// 3. the client IP, as [`ClientIp`] gives it, for anonymous callers.
    ///
    /// A credential header that is present but unusable (repeated, empty,
    /// not visible ASCII, over 8 KiB) gives no key at all rather than a
    /// fall back to the IP: a caller that presents a credential is never
    /// quietly put in one scope with everyone behind its address.
    ///
    /// The key is the credential itself, so put authentication before the
    /// layer that uses it: an unchecked header is any string a client
    /// chooses. [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer)
    /// stores only a SHA-256 of it; a store that writes keys in clear (the
    /// rate limiter's Redis key names) holds the credential. Where a token
    /// rotates within a retry window (OAuth access tokens), a retry after the
    /// refresh is another caller: scope by the authenticated subject
    /// instead, with a closure over what the authentication layer put in the
    /// request's extensions.
    ///
    /// Behind a reverse proxy every anonymous caller has the proxy's address:
    /// give [`client_ip`](Self::client_ip) a [`ClientIp`] that
    /// [trusts](ClientIp::trust) it.
    ///
    /// ```
    /// use palisade::key::{Caller, KeyExtractor};
    ///
    /// let caller = Caller::new();
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("192.0.2.7:4000".parse::<std::net::SocketAddr>().unwrap());
    /// assert_eq!(caller.extract(&req).as_deref(), Some("ip:192.0.2.7"));
    /// req.headers_mut().insert("authorization", "Bearer t-1".parse().unwrap());
    /// assert_eq!(caller.extract(&req).as_deref(), Some("authorization:Bearer t-1"));
    /// req.headers_mut().insert("x-api-key", "k-123".parse().unwrap());
    /// assert_eq!(caller.extract(&req).as_deref(), Some("x-api-key:k-123"));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Default)]
    pub struct Caller {
        client_ip: ClientIp,
    }

    impl Caller {
        /// `X-Api-Key`, else `Authorization`, else the peer address
        /// ([`ClientIp::new`]: no trusted proxies).
        pub fn new() -> Self {
            Self::default()
        }

        /// Reads the address of anonymous callers with `client_ip` (trusted
        /// proxies, the peer from axum's `ConnectInfo`, IPv6 prefixes).
        #[must_use]
        pub fn client_ip(mut self, client_ip: ClientIp) -> Self {
            self.client_ip = client_ip;
            self
        }
    }

    /// The credential in header `name`: `None` when absent, `Some(None)`
    /// when present but unusable.
    fn credential<B>(req: &Request<B>, name: &HeaderName) -> Option<Option<String>> {
        let mut values = req.headers().get_all(name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return Some(None);
        }
        let value = value.to_str().ok().map(str::trim);
        Some(
            value
                .filter(|v| !v.is_empty() && v.len() <= MAX_CREDENTIAL_LEN)
                .map(|v| format!("{name}:{v}")),
        )
    }

    impl<B> KeyExtractor<Request<B>> for Caller {
        fn extract(&self, req: &Request<B>) -> Option<String> {
            if let Some(key) = credential(req, &X_API_KEY) {
                return key;
            }
            if let Some(key) = credential(req, &AUTHORIZATION) {
                return key;
            }
            self.client_ip.extract(req)
        }
    }
}
