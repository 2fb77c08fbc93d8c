//! Key extractors: client IP behind trusted proxies, headers, fallbacks.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Request};
use palisade::key::{Cidr, ClientIp, Global, Header, KeyExtractor, Or};
use proptest::prelude::*;

fn from(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let headers: Vec<_> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    from_bytes(peer, &headers)
}

/// A request whose header values may hold any byte HTTP allows, such as
/// obs-text (0x80-0xff), which hyper accepts.
fn from_bytes(peer: &str, headers: &[(&str, &[u8])]) -> Request<()> {
    let mut r = Request::builder();
    for (k, v) in headers {
        r = r.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    let mut r = r.body(()).unwrap();
    r.extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    r
}

fn proxies() -> ClientIp {
    ClientIp::new().trust([
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:ffff::/48".parse().unwrap(),
    ])
}

#[test]
fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let spoof = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")];
    for key in [ClientIp::new(), proxies(), proxies().forwarded()] {
        assert_eq!(
            key.extract(&from("203.0.113.7:5000", &spoof)).as_deref(),
            Some("ip:203.0.113.7")
        );
    }
}

#[test]
fn forwarded_for_from_a_trusted_proxy_gives_the_rightmost_untrusted_hop() {
    let key = proxies();
    // The client wrote 6.6.6.6 itself; our proxies appended the rest.
    let r = from(
        "10.0.0.1:443",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.9.9.9")],
    );
    assert_eq!(key.extract(&r).as_deref(), Some("ip:198.51.100.4"));
    // Several header lines are one list, in order.
    let r = from(
        "10.0.0.1:443",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.5:1234"),
        ],
    );
    assert_eq!(key.extract(&r).as_deref(), Some("ip:198.51.100.5"));
    // All hops trusted: the leftmost is the client.
    let r = from("10.0.0.1:443", &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
    assert_eq!(key.extract(&r).as_deref(), Some("ip:10.1.1.1"));
    // Empty entries carry nothing.
    let r = from(
        "10.0.0.1:443",
        &[("x-forwarded-for", "198.51.100.6, , 10.2.2.2,")],
    );
    assert_eq!(key.extract(&r).as_deref(), Some("ip:198.51.100.6"));
    // No header at all: the proxy itself.
    assert_eq!(
        key.extract(&from("10.0.0.1:443", &[])).as_deref(),
        Some("ip:10.0.0.1")
    );
    // X-Forwarded-For is ignored when Forwarded is configured, and back.
    let r = from("10.0.0.1:443", &[("x-forwarded-for", "198.51.100.4")]);
    assert_eq!(
        proxies().forwarded().extract(&r).as_deref(),
        Some("ip:10.0.0.1")
    );
}

#[test]
fn rfc_7239_forwarded_is_read_with_quotes_ports_and_ipv6() {
    let key = proxies().forwarded();
    let r = from(
        "10.0.0.1:443",
        &[(
            "forwarded",
            r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";proto=https, for=10.3.3.3;by=10.0.0.1"#,
        )],
    );
    assert_eq!(key.extract(&r).as_deref(), Some("ip:2001:db8:cafe::/64"));
    let r = from("10.0.0.1:443", &[("forwarded", "for=198.51.100.9:80")]);
    assert_eq!(key.extract(&r).as_deref(), Some("ip:198.51.100.9"));
    let r = from("10.0.0.1:443", &[("forwarded", "for=2001:db8:cafe::18")]);
    assert_eq!(
        key.extract(&r).as_deref(),
        Some("ip:2001:db8:cafe::/64"),
        "unbracketed IPv6 is read too"
    );
}

#[test]
fn ipv6_clients_are_grouped_by_their_64_bit_prefix_by_default() {
    let r1 = from("[2001:db8:1:2:aaaa::1]:443", &[]);
    let r2 = from("[2001:db8:1:2:bbbb::2]:443", &[]);
    let other = from("[2001:db8:1:3::1]:443", &[]);
    let key = ClientIp::new();
    assert_eq!(key.extract(&r1).as_deref(), Some("ip:2001:db8:1:2::/64"));
    assert_eq!(key.extract(&r1), key.extract(&r2));
    assert_ne!(key.extract(&r1), key.extract(&other));
    let whole = ClientIp::new().ipv6_prefix(128);
    assert_eq!(
        whole.extract(&r1).as_deref(),
        Some("ip:2001:db8:1:2:aaaa::1")
    );
    assert_ne!(whole.extract(&r1), whole.extract(&r2));
    let wide = ClientIp::new().ipv6_prefix(48);
    assert_eq!(wide.extract(&other).as_deref(), Some("ip:2001:db8:1::/48"));
    // Behind a trusted proxy too, and the proxy's own address is not grouped
    // into the client's: trust is decided on whole addresses.
    let r = from(
        "[2001:db8:ffff::1]:443",
        &[("x-forwarded-for", "2001:db8:1:2::99, 2001:db8:ffff::2")],
    );
    assert_eq!(
        proxies().extract(&r).as_deref(),
        Some("ip:2001:db8:1:2::/64")
    );
}

#[test]
fn ipv4_mapped_addresses_key_as_ipv4() {
    for key in [ClientIp::new(), ClientIp::new().ipv6_prefix(128)] {
        let mapped = from("[::ffff:192.0.2.1]:443", &[]);
        assert_eq!(key.extract(&mapped).as_deref(), Some("ip:192.0.2.1"));
    }
    let r = from(
        "[::ffff:10.0.0.1]:443",
        &[("x-forwarded-for", "::ffff:198.51.100.7, ::ffff:10.0.0.2")],
    );
    assert_eq!(proxies().extract(&r).as_deref(), Some("ip:198.51.100.7"));
    let r = from(
        "10.0.0.1:443",
        &[("forwarded", r#"for="[::ffff:198.51.100.8]:80""#)],
    );
    assert_eq!(
        proxies().forwarded().extract(&r).as_deref(),
        Some("ip:198.51.100.8")
    );
}

/// A byte that is not visible ASCII spoils only its own entry: one the
/// client wrote left of the proxies' entries changes nothing, on the same
/// line or on another.
#[test]
fn an_odd_byte_in_a_client_written_entry_changes_nothing() {
    let xff = proxies();
    let r = from_bytes(
        "10.0.0.1:443",
        &[("x-forwarded-for", b"6.6.\xff6.6, 198.51.100.4, 10.9.9.9")],
    );
    assert_eq!(xff.extract(&r).as_deref(), Some("ip:198.51.100.4"));
    let r = from_bytes(
        "10.0.0.1:443",
        &[
            ("x-forwarded-for", b"\xe9t\xe9"),
            ("x-forwarded-for", b"198.51.100.5"),
        ],
    );
    assert_eq!(xff.extract(&r).as_deref(), Some("ip:198.51.100.5"));
    let fwd = proxies().forwarded();
    let r = from_bytes(
        "10.0.0.1:443",
        &[(
            "forwarded",
            b"for=\"\x80\", for=198.51.100.6;proto=https\xff, for=10.3.3.3",
        )],
    );
    assert_eq!(fwd.extract(&r).as_deref(), Some("ip:198.51.100.6"));
    // A quote the client leaves open does not swallow the proxies' entries.
    let r = from(
        "10.0.0.1:443",
        &[("forwarded", r#"for="6.6.6.6, for=198.51.100.7"#)],
    );
    assert_eq!(fwd.extract(&r).as_deref(), Some("ip:198.51.100.7"));
}

/// What stands in the client's position but is no address keys the request
/// by its bytes: never the trusted proxy's bucket, one key per entry.
#[test]
fn an_entry_that_is_no_address_in_the_client_position_keys_by_its_bytes() {
    let xff = proxies();
    let key = |value: &[u8]| {
        xff.extract(&from_bytes("10.0.0.1:443", &[("x-forwarded-for", value)]))
            .unwrap()
    };
    let nonsense = key(b"1.1.1.1, nonsense, 10.9.9.9");
    assert!(nonsense.starts_with("ip:unparsed:"), "{nonsense}");
    assert_eq!(nonsense.len(), "ip:unparsed:".len() + 16, "{nonsense}");
    assert_eq!(nonsense, key(b"nonsense"), "stable: only the entry counts");
    assert_ne!(nonsense, key(b"nonsens\xe9"));
    assert_ne!(key(b"\xff"), key(b"\xfe"));
    assert_ne!(key(b"\xff"), "ip:10.0.0.1");
    // Forwarded: the `for=` node decides; an element without one is itself
    // the entry. Obfuscated nodes and `unknown` are keys of their own.
    let fwd = proxies().forwarded();
    let key = |value: &[u8]| {
        fwd.extract(&from_bytes("10.0.0.1:443", &[("forwarded", value)]))
            .unwrap()
    };
    let hidden = key(br#"for="_hidden";proto=https"#);
    assert!(hidden.starts_with("ip:unparsed:"), "{hidden}");
    assert_eq!(
        hidden,
        key(br#"for=198.51.100.1, For="_hidden";proto=http"#)
    );
    assert_ne!(hidden, key(b"for=unknown"));
    assert!(key(b"for=unknown").starts_with("ip:unparsed:"));
    assert!(key(b"proto=https, for=10.3.3.3").starts_with("ip:unparsed:"));
    assert!(key(b"for=\"[2001:db8::1]x\"").starts_with("ip:unparsed:"));
    // The public walk says the same.
    let headers = from("10.0.0.1:443", &[("x-forwarded-for", "1.1.1.1, nonsense")]);
    let peer = "10.0.0.1".parse().unwrap();
    assert_eq!(xff.client(peer, headers.headers()), None);
    let headers = from("10.0.0.1:443", &[("x-forwarded-for", "198.51.100.4")]);
    assert_eq!(
        xff.client(peer, headers.headers()),
        Some("198.51.100.4".parse().unwrap())
    );
}

/// A client's bytes inside a quoted value a trusted proxy writes, such as
/// its Host in `host="..."`, add no `for=` of their own.
#[test]
fn a_host_quoted_into_forwarded_cannot_choose_the_address() {
    let fwd = proxies().forwarded();
    let key = |value: &str| {
        fwd.extract(&from("10.0.0.1:443", &[("forwarded", value)]))
            .unwrap()
    };
    // Host `x;for=6.6.6.6;y=`, quoted by the proxy.
    assert_eq!(
        key(r#"host="x;for=6.6.6.6;y=";for=198.51.100.4"#),
        "ip:198.51.100.4"
    );
    // Escaped quotes and backslashes stay inside the string.
    assert_eq!(
        key(r#"host="x\";for=6.6.6.6;y=\\";for=198.51.100.4"#),
        "ip:198.51.100.4"
    );
    // Unescaped, a Host can close the quote: then two `for=`, a quote out of
    // place or one left open, never the client's address.
    assert_eq!(
        key(r#"host="x";for=6.6.6.6;y="";for=198.51.100.4"#),
        "ip:unparsed:ambiguous"
    );
    assert_eq!(
        key(r#"host="x";for=6.6.6.6";for=198.51.100.4"#),
        "ip:unparsed:malformed"
    );
    assert_eq!(
        key(r#"host="";for=6.6.6.6;y=";for=198.51.100.4"#),
        "ip:unparsed:malformed"
    );
    assert_eq!(
        key("host=x;for=6.6.6.6;for=198.51.100.4"),
        "ip:unparsed:ambiguous"
    );
    // A comma in the Host splits the element, but the rightmost part still
    // holds the proxy's `for=`, or is malformed.
    assert_eq!(
        key(r#"host="x",for=6.6.6.6,a="";for=198.51.100.4"#),
        "ip:198.51.100.4"
    );
    assert_eq!(
        key(r#"host="x",for=6.6.6.6,y";for=198.51.100.4"#),
        "ip:unparsed:malformed"
    );
    // An escaping proxy that writes the Host after its `for=`.
    assert_eq!(
        key(r#"for=198.51.100.4;host="x,for=6.6.6.6;y=\"""#),
        "ip:unparsed:malformed"
    );
}

/// An element whose bytes a client may vary keys by a constant, not by a
/// digest of them: a new Host per request is not a new bucket per request.
#[test]
fn a_forwarded_element_without_one_for_node_keys_by_a_constant() {
    let fwd = proxies().forwarded();
    let key = |value: &str| {
        fwd.extract(&from("10.0.0.1:443", &[("forwarded", value)]))
            .unwrap()
    };
    for host in ["a.example", "b.example", "x;for=6.6.6.6;y="] {
        assert_eq!(
            key(&format!(r#"host="{host}";proto=https, for=10.3.3.3"#)),
            "ip:unparsed:nofor",
            "{host}"
        );
    }
    for ambiguous in [
        "for=198.51.100.1;for=198.51.100.2",
        "for=198.51.100.1;For=198.51.100.1",
        "for=_a;for=_b",
    ] {
        assert_eq!(key(ambiguous), "ip:unparsed:ambiguous", "{ambiguous}");
    }
    for malformed in [
        r#"for="198.51.100.1"#,
        r#"for="198.51.100.1"x"#,
        r#"for="198.51.100.1\""#,
        r#"for=198.51.100.1""#,
        r#"fo"r=198.51.100.1"#,
        r#""x";for=198.51.100.1"#,
    ] {
        assert_eq!(key(malformed), "ip:unparsed:malformed", "{malformed}");
    }
    // One `for=` that is no address: the digest of its value, whatever the
    // rest of the element says. An obfuscated node is limited only as long
    // as the proxy keeps it.
    let hidden = key("for=_hidden");
    assert_eq!(hidden.len(), "ip:unparsed:".len() + 16, "{hidden}");
    assert_eq!(hidden, key(r#"for=_hidden;host="a;b""#));
    assert_ne!(hidden, key("for=_hidden2"));
    // Empty pairs and pairs without a value are skipped; space around `=`
    // and `;` is allowed.
    assert_eq!(key("for=198.51.100.3;;proto"), "ip:198.51.100.3");
    assert_eq!(
        key(r#"proto=https ; for = "198.51.100.3:80" ;"#),
        "ip:198.51.100.3"
    );
    let headers = from("10.0.0.1:443", &[("forwarded", "for=1.1.1.1;for=1.1.1.1")]);
    assert_eq!(
        fwd.client("10.0.0.1".parse().unwrap(), headers.headers()),
        None
    );
}

/// X-Forwarded-For entries are node addresses as in `Forwarded`: IPv6 in
/// brackets, with or without a port, keeps its /64 and its trust.
#[test]
fn x_forwarded_for_reads_bracketed_ipv6_and_ports() {
    let key = |value: &str| {
        proxies()
            .extract(&from("10.0.0.1:443", &[("x-forwarded-for", value)]))
            .unwrap()
    };
    for client in [
        "[2001:db8:1:2::99]",
        "[2001:db8:1:2::99]:4711",
        "2001:db8:1:2::99",
    ] {
        for proxy in ["[2001:db8:ffff::2]", "[2001:db8:ffff::2]:80", "10.9.9.9:80"] {
            assert_eq!(
                key(&format!("6.6.6.6, {client}, {proxy}")),
                "ip:2001:db8:1:2::/64",
                "{client}, {proxy}"
            );
        }
    }
    assert_eq!(key("198.51.100.4:_a1"), "ip:198.51.100.4");
    for bad in [
        "198.51.100.4:x",
        "198.51.100.4:123456",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "[198.51.100.4]",
        r#""198.51.100.4""#,
    ] {
        assert!(key(bad).starts_with("ip:unparsed:"), "{bad}");
    }
}

#[test]
fn the_peer_can_come_from_another_extension() {
    #[derive(Clone)]
    struct Conn(SocketAddr);
    let key = ClientIp::new().peer(|ext| ext.get::<Conn>().map(|c| c.0.ip()));
    let mut r = Request::new(());
    assert_eq!(key.extract(&r), None, "no peer, no key");
    r.extensions_mut()
        .insert(Conn("192.0.2.8:1".parse().unwrap()));
    assert_eq!(key.extract(&r).as_deref(), Some("ip:192.0.2.8"));
}

#[test]
fn header_keys_are_prefixed_and_bad_values_give_no_key() {
    let key = Header::api_key();
    assert_eq!(
        key.extract(&from("192.0.2.1:1", &[("x-api-key", " abc ")]))
            .as_deref(),
        Some("x-api-key:abc")
    );
    assert_eq!(
        key.extract(&from("192.0.2.1:1", &[("x-api-key", "")])),
        None
    );
    let long = "a".repeat(257);
    assert_eq!(
        key.extract(&from("192.0.2.1:1", &[("x-api-key", &long)])),
        None
    );
    let either = Or::new(Header::api_key(), |_: &Request<()>| {
        Some("closure".to_owned())
    });
    assert_eq!(
        either.extract(&from("192.0.2.1:1", &[])).as_deref(),
        Some("closure")
    );
    assert_eq!(
        KeyExtractor::<Request<()>>::extract(&Global, &Request::new(())).as_deref(),
        Some("global")
    );
}

#[test]
fn networks_parse_or_say_why_not() {
    let net: Cidr = "192.0.2.0/24".parse().unwrap();
    assert!(net.contains("192.0.2.200".parse().unwrap()));
    assert!(!net.contains("192.0.3.1".parse().unwrap()));
    assert!(
        net.contains("::ffff:192.0.2.9".parse().unwrap()),
        "mapped IPv4 is IPv4"
    );
    let one: Cidr = "2001:db8::1".parse().unwrap();
    assert!(one.contains("2001:db8::1".parse().unwrap()));
    assert!(!one.contains("2001:db8::2".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/", "::/129"] {
        let err = bad.parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains(bad), "{err}");
    }
}

/// One entry of a generated forwarding header.
#[derive(Debug, Clone)]
enum Hop {
    /// A trusted proxy's address, in 10.0.0.0/8 or 2001:db8:ffff::/48.
    Trusted(IpAddr),
    /// A client's address (not trusted), as written, with its key.
    Client(String, String),
    /// Bytes that are no address: at least one obs-text byte, no comma,
    /// semicolon or `=` (so no `for=` parameter of their own); `bare` ones
    /// are a whole `Forwarded` element, the others a `for=` node.
    Odd { bytes: Vec<u8>, bare: bool },
}

fn trusted() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
        any::<u16>().prop_map(|n| IpAddr::from([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, n])),
    ]
}

fn client() -> impl Strategy<Value = Hop> {
    prop_oneof![
        any::<u8>()
            .prop_map(|n| Hop::Client(format!("198.51.100.{n}"), format!("ip:198.51.100.{n}"))),
        (any::<u8>(), 1..u16::MAX).prop_map(|(n, port)| Hop::Client(
            format!("203.0.113.{n}:{port}"),
            format!("ip:203.0.113.{n}")
        )),
        any::<u16>().prop_map(|n| Hop::Client(
            format!("2001:db8:1:2::{n:x}"),
            "ip:2001:db8:1:2::/64".to_owned()
        )),
        any::<u8>()
            .prop_map(|n| Hop::Client(format!("::ffff:192.0.2.{n}"), format!("ip:192.0.2.{n}"))),
        (any::<u16>(), prop::option::of(1..u16::MAX)).prop_map(|(n, port)| Hop::Client(
            match port {
                Some(port) => format!("[2001:db8:1:3::{n:x}]:{port}"),
                None => format!("[2001:db8:1:3::{n:x}]"),
            },
            "ip:2001:db8:1:3::/64".to_owned()
        )),
    ]
}

/// A byte HTTP allows in a field value; a control byte becomes another.
fn field_byte(b: u8) -> u8 {
    match b {
        b'\t' | 0x20..=0x7e | 0x80..=0xff => b,
        0x7f => b'~',
        _ => b | 0x40,
    }
}

fn odd() -> impl Strategy<Value = Hop> {
    (
        prop::collection::vec(any::<u8>(), 0..12),
        0x80..=0xffu8,
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(bytes, obs, at, bare)| {
            let mut bytes: Vec<u8> = bytes
                .into_iter()
                .map(field_byte)
                .filter(|b| !b",;=".contains(b))
                .collect();
            bytes.insert(at.index(bytes.len() + 1), obs);
            Hop::Odd { bytes, bare }
        })
}

fn hop() -> impl Strategy<Value = Hop> {
    prop_oneof![trusted().prop_map(Hop::Trusted), client(), odd()]
}

/// Lines of any bytes HTTP allows, commas included.
fn raw_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(any::<u8>().prop_map(field_byte), 0..24),
        0..3,
    )
}

fn encode(hop: &Hop, forwarded: bool) -> Vec<u8> {
    match (hop, forwarded) {
        (Hop::Trusted(ip), false) => ip.to_string().into_bytes(),
        (Hop::Trusted(IpAddr::V4(ip)), true) => format!("for={ip}").into_bytes(),
        (Hop::Trusted(IpAddr::V6(ip)), true) => format!("for=\"[{ip}]\"").into_bytes(),
        (Hop::Client(text, _), false) => text.clone().into_bytes(),
        (Hop::Client(text, _), true) if text.starts_with('[') => {
            format!("for=\"{text}\"").into_bytes()
        }
        (Hop::Client(text, _), true) if text.contains("::") => {
            format!("for=\"[{text}]:8080\";proto=https").into_bytes()
        }
        (Hop::Client(text, _), true) => format!("For={text}").into_bytes(),
        (Hop::Odd { bytes, .. }, false) => bytes.clone(),
        (Hop::Odd { bytes, bare: true }, true) => bytes.clone(),
        (Hop::Odd { bytes, bare: false }, true) => [b"for=".as_slice(), bytes].concat(),
    }
}

fn is_trusted_key(key: &str) -> bool {
    let Some(addr) = key.strip_prefix("ip:") else {
        return false;
    };
    let addr = addr.split_once('/').map_or(addr, |(a, _)| a);
    addr.parse::<IpAddr>().is_ok_and(|ip| {
        ["10.0.0.0/8", "2001:db8:ffff::/48"]
            .iter()
            .any(|n| n.parse::<Cidr>().unwrap().contains(ip))
    })
}

/// An address as X-Forwarded-For gives it: bare, with a port, or IPv6 in
/// brackets (random bytes do not hit the obfuscated or 5-digit ports).
fn xff_address(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let v6 = e.strip_prefix('[')?.strip_suffix(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        })
}

/// Pieces of a Host a client writes to smuggle a `for=` into the element a
/// proxy quotes it in.
fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b";".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"=".to_vec()),
        Just(b" ".to_vec()),
        Just(b"for=".to_vec()),
        Just(b"6.6.6.6".to_vec()),
        Just(b"10.0.0.5".to_vec()),
        Just(b"\"[2001:db8::6]:1\"".to_vec()),
        Just(b"_obf".to_vec()),
        prop::collection::vec(any::<u8>().prop_map(field_byte), 1..4),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// The headers for `raw` lines first, then `hops` split into lines at
/// `breaks`, and the key a trusted peer's request with them gets.
fn key_of(forwarded: bool, raw: &[Vec<u8>], hops: &[Hop], breaks: &[bool]) -> String {
    let name = if forwarded {
        "forwarded"
    } else {
        "x-forwarded-for"
    };
    let mut lines: Vec<Vec<u8>> = raw.to_vec();
    let mut line = Vec::new();
    for (i, hop) in hops.iter().enumerate() {
        if !line.is_empty() {
            line.extend_from_slice(b", ");
        }
        line.extend(encode(hop, forwarded));
        if breaks.get(i).copied().unwrap_or(false) {
            lines.push(std::mem::take(&mut line));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let headers: Vec<(&str, &[u8])> = lines.iter().map(|l| (name, l.as_slice())).collect();
    let key = if forwarded {
        proxies().forwarded()
    } else {
        proxies()
    };
    key.extract(&from_bytes("10.0.0.1:443", &headers))
        .expect("a peer gives a key")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Behind a trusted proxy, the rightmost entry that is not a trusted
    /// proxy is the key, whatever bytes stand anywhere else: an address
    /// keys as itself, anything else by its bytes, never as a proxy.
    #[test]
    fn the_rightmost_untrusted_entry_is_the_key_whatever_the_bytes(
        forwarded in any::<bool>(),
        raw in raw_lines(),
        hops in prop::collection::vec(hop(), 0..8),
        breaks in prop::collection::vec(any::<bool>(), 8),
    ) {
        let key = key_of(forwarded, &raw, &hops, &breaks);
        match hops.iter().rev().find(|h| !matches!(h, Hop::Trusted(_))) {
            Some(Hop::Client(_, expected)) => prop_assert_eq!(&key, expected),
            Some(Hop::Odd { bare: true, .. }) if forwarded => {
                // No `=`, so no `for=`: a constant, never the bytes' digest.
                prop_assert!(
                    key == "ip:unparsed:nofor" || key == "ip:unparsed:malformed",
                    "{}", key
                );
            }
            Some(odd @ Hop::Odd { .. }) => {
                prop_assert!(key.starts_with("ip:unparsed:"), "{}", key);
                // Derived from that entry alone.
                prop_assert_eq!(&key, &key_of(forwarded, &[], std::slice::from_ref(odd), &[]));
            }
            _ => {
                // Every generated entry is trusted: the raw lines decide.
                // Where one of them holds an entry that is no trusted
                // address, the key is no proxy's either.
                let raw_untrusted = raw.iter().flat_map(|l| l.split(|&b| b == b',')).any(|e| {
                    let e = e.trim_ascii();
                    !e.is_empty()
                        && !std::str::from_utf8(e).ok().and_then(xff_address).is_some_and(|ip| is_trusted_key(&format!("ip:{}", ip.to_canonical())))
                });
                if !forwarded && raw_untrusted {
                    prop_assert!(!is_trusted_key(&key), "{}", key);
                }
                if raw.iter().all(|l| l.trim_ascii().is_empty()) {
                    // Nothing untrusted at all: the leftmost proxy, else the peer.
                    prop_assert!(is_trusted_key(&key), "{}", key);
                }
            }
        }
    }

    /// A trusted proxy that writes the client's Host into its `Forwarded`
    /// element, quoted (escaped, or unescaped but before its `for=`), leaves
    /// the client no choice of key: its address, or a constant bucket
    /// shared by everything malformed, never an address or a digest of its
    /// choosing. Without a comma, a properly quoted Host changes nothing.
    #[test]
    fn a_host_a_proxy_quotes_never_chooses_the_key(
        host in host_bytes(),
        sent in host_bytes(),
        client in client(),
        escape in any::<bool>(),
        host_first in any::<bool>(),
    ) {
        let Hop::Client(_, expected) = &client else { unreachable!() };
        let quoted = if escape {
            host.iter().flat_map(|&b| match b {
                b'"' | b'\\' => vec![b'\\', b],
                b => vec![b],
            }).collect()
        } else {
            host.clone()
        };
        let host_pair = [b"host=\"".as_slice(), &quoted, b"\""].concat();
        let for_pair = encode(&client, true);
        // Unescaped after its `for=`, a Host can end the element: unsafe.
        let element = if host_first || !escape {
            [host_pair, b";".to_vec(), for_pair].concat()
        } else {
            [for_pair, b";".to_vec(), host_pair].concat()
        };
        // What the client sent itself, on the line the proxy appends to.
        let line = [sent.as_slice(), b", ", &element].concat();
        let key = proxies()
            .forwarded()
            .extract(&from_bytes("10.0.0.1:443", &[("forwarded", &line)]))
            .unwrap();
        let constant = ["ip:unparsed:malformed", "ip:unparsed:ambiguous", "ip:unparsed:nofor"];
        prop_assert!(&key == expected || constant.contains(&key.as_str()), "{}", key);
        if !host.contains(&b',') && (escape || !host.iter().any(|b| b"\"\\".contains(b))) {
            prop_assert_eq!(&key, expected);
        }
    }

    /// An untrusted peer is the key, whatever it sends.
    #[test]
    fn an_untrusted_peer_is_the_key_whatever_it_sends(
        raw in raw_lines(),
        hops in prop::collection::vec(hop(), 0..8),
        forwarded in any::<bool>(),
    ) {
        let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
        let mut lines = raw;
        lines.push(hops.iter().map(|h| encode(h, forwarded)).collect::<Vec<_>>().join(b", ".as_slice()));
        let headers: Vec<(&str, &[u8])> = lines.iter().map(|l| (name, l.as_slice())).collect();
        let key = if forwarded { proxies().forwarded() } else { proxies() };
        let got = key.extract(&from_bytes("203.0.113.7:5000", &headers));
        prop_assert_eq!(got.as_deref(), Some("ip:203.0.113.7"));
    }
}
