//! Key extractors: client IP behind trusted proxies, headers, fallbacks.

use std::net::SocketAddr;

use http::Request;
use palisade::key::{Cidr, ClientIp, Global, Header, KeyExtractor, Or};

fn from(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::builder();
    for (k, v) in headers {
        r = r.header(*k, *v);
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
    // Garbage where a proxy should have written: stop at the last trusted hop.
    let r = from("10.0.0.1:443", &[("x-forwarded-for", "1.1.1.1, nonsense")]);
    assert_eq!(key.extract(&r).as_deref(), Some("ip:10.0.0.1"));
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
    assert_eq!(key.extract(&r).as_deref(), Some("ip:2001:db8:cafe::17"));
    let r = from("10.0.0.1:443", &[("forwarded", "for=198.51.100.9:80")]);
    assert_eq!(key.extract(&r).as_deref(), Some("ip:198.51.100.9"));
    let r = from("10.0.0.1:443", &[("forwarded", "for=unknown")]);
    assert_eq!(
        key.extract(&r).as_deref(),
        Some("ip:10.0.0.1"),
        "obfuscated: stop"
    );
}

#[test]
fn ipv6_clients_can_be_grouped_by_their_64_bit_prefix() {
    let r1 = from("[2001:db8:1:2:aaaa::1]:443", &[]);
    let r2 = from("[2001:db8:1:2:bbbb::2]:443", &[]);
    let key = ClientIp::new().ipv6_prefix(64);
    assert_eq!(key.extract(&r1).as_deref(), Some("ip:2001:db8:1:2::/64"));
    assert_eq!(key.extract(&r1), key.extract(&r2));
    assert_ne!(ClientIp::new().extract(&r1), ClientIp::new().extract(&r2));
    // IPv4 (also mapped into IPv6) is unaffected.
    let mapped = from("[::ffff:192.0.2.1]:443", &[]);
    assert_eq!(key.extract(&mapped).as_deref(), Some("ip:192.0.2.1"));
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
