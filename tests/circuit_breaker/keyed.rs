//! One breaker per key: isolation, bounded memory, the open-share cap.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade::circuit_breaker::{Config, Error, KeyedCircuitBreakerLayer, Rate, State};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{SEC, nz};

type Call = (&'static str, bool);

fn hosts(
    calls: Arc<AtomicUsize>,
) -> impl Service<Call, Response = &'static str, Error = &'static str> + Clone {
    service_fn(move |(host, fail): Call| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { if fail { Err("boom") } else { Ok(host) } }
    })
}

async fn send<S>(
    svc: &mut S,
    host: &'static str,
    fail: bool,
) -> Result<&'static str, Error<&'static str>>
where
    S: Service<Call, Response = &'static str, Error = Error<&'static str>>,
{
    svc.ready().await?.call((host, fail)).await
}

fn config() -> Config {
    Config::new()
        .consecutive_failures(nz(2))
        .open_wait(30 * SEC)
}

/// The registry is created once, by `new`: a handle taken before `per` and
/// `max_keys` sees the keys of every service built from the layer and its
/// clones, and `max_keys` applies to that registry.
#[tokio::test(start_paused = true)]
async fn a_handle_taken_right_after_new_sees_every_service_of_the_layer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = KeyedCircuitBreakerLayer::new(config());
    let handle = layer.handle();
    let layer = layer
        .per(|c: &Call| c.0)
        .max_keys(NonZeroUsize::new(2).unwrap());
    let mut first = layer.layer(hosts(calls.clone()));
    let mut second = layer.clone().layer(hosts(calls.clone()));
    let _ = send(&mut first, "a", true).await;
    let _ = send(&mut second, "a", true).await;
    assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
    assert!(matches!(
        send(&mut first, "a", false).await,
        Err(Error::Open { .. })
    ));
    let _ = send(&mut second, "b", false).await;
    let _ = send(&mut first, "c", false).await;
    assert_eq!(handle.len(), 2);
    // The closed key went first; the open one is kept.
    assert!(handle.get(&"b").is_none());
    assert_eq!(handle.open_keys(), 1);
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = KeyedCircuitBreakerLayer::new(config()).per(|c: &Call| c.0);
    let handle = layer.handle();
    let mut svc = layer.layer(hosts(calls.clone()));
    let _ = send(&mut svc, "a", true).await;
    let _ = send(&mut svc, "a", true).await;
    assert!(matches!(
        send(&mut svc, "a", false).await,
        Err(Error::Open { .. })
    ));
    assert_eq!(send(&mut svc, "b", false).await.unwrap(), "b");
    assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
    assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
    assert_eq!(handle.open_keys(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Clones share the breakers.
    let mut clone = svc.clone();
    assert!(matches!(
        send(&mut clone, "a", false).await,
        Err(Error::Open { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_and_open_keys_are_kept_over_closed_ones() {
    let layer = KeyedCircuitBreakerLayer::new(config())
        .per(|c: &Call| c.0)
        .max_keys(NonZeroUsize::new(2).unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(hosts(Arc::default()));
    let _ = send(&mut svc, "a", true).await;
    let _ = send(&mut svc, "a", true).await; // a is open
    let _ = send(&mut svc, "b", false).await;
    let _ = send(&mut svc, "c", false).await; // forgets b, the closed one
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&"b").is_none());
    assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
    let _ = send(&mut svc, "c", false).await;
    let _ = send(&mut svc, "d", false).await; // forgets c
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&"c").is_none());
    assert!(matches!(
        send(&mut svc, "a", false).await,
        Err(Error::Open { .. })
    ));

    for host in ["e", "f", "g", "h"] {
        let _ = send(&mut svc, host, false).await;
    }
    assert_eq!(handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_share_of_open_keys_is_capped() {
    let layer = KeyedCircuitBreakerLayer::new(config())
        .per(|c: &Call| c.0)
        .max_open_share(Rate::HALF);
    let handle = layer.handle();
    let mut svc = layer.layer(hosts(Arc::default()));
    for host in ["a", "b", "c", "d"] {
        let _ = send(&mut svc, host, false).await;
    }
    for host in ["a", "b", "c"] {
        let _ = send(&mut svc, host, true).await;
        let _ = send(&mut svc, host, true).await;
    }
    assert_eq!(handle.open_keys(), 2, "2 of 4 keys may be open");
    assert_eq!(handle.get(&"c").unwrap().state(), State::Closed);
    assert!(
        matches!(send(&mut svc, "c", true).await, Err(Error::Inner(_))),
        "c still passes"
    );

    // When a is closed again, c may open.
    tokio::time::advance(30 * SEC).await;
    assert_eq!(send(&mut svc, "a", false).await.unwrap(), "a");
    assert_eq!(handle.get(&"a").unwrap().state(), State::Closed);
    assert_eq!(handle.open_keys(), 1);
    let _ = send(&mut svc, "c", true).await;
    assert_eq!(handle.get(&"c").unwrap().state(), State::Open);
    assert_eq!(handle.open_keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_key_may_always_open_under_the_cap() {
    let layer = KeyedCircuitBreakerLayer::new(config())
        .per(|c: &Call| c.0)
        .max_open_share(Rate::new(0.01).unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(hosts(Arc::default()));
    let _ = send(&mut svc, "a", true).await;
    let _ = send(&mut svc, "a", true).await;
    assert_eq!(handle.open_keys(), 1);
    let _ = send(&mut svc, "b", true).await;
    let _ = send(&mut svc, "b", true).await;
    assert_eq!(handle.open_keys(), 1);
    assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn logs_carry_the_redacted_key_never_the_key() {
    let logs = crate::support::CapturedLogs::start();
    let layer = KeyedCircuitBreakerLayer::new(config().name("clients"))
        .per(|c: &Call| c.0)
        .max_keys(NonZeroUsize::new(1).unwrap());
    let mut svc = layer.layer(hosts(Arc::default()));
    let _ = send(&mut svc, "203.0.113.7", true).await;
    let _ = send(&mut svc, "203.0.113.7", true).await;
    assert!(matches!(
        send(&mut svc, "203.0.113.7", false).await,
        Err(Error::Open { .. })
    ));
    // A second key evicts the first (an open key is forgotten last, but it
    // is the only one).
    send(&mut svc, "198.51.100.2", false).await.unwrap();

    let logs = logs.text();
    assert!(!logs.contains("203.0.113"), "raw key logged:\n{logs}");
    assert!(!logs.contains("198.51.100"), "raw key logged:\n{logs}");
    let digest = palisade::observability::redact_key("203.0.113.7");
    let with_key: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("key={digest}")))
        .collect();
    for event in [
        "circuit breaker call finished",
        "circuit breaker state changed",
        "circuit breaker rejected a call",
        "keyed circuit breaker forgot a key",
    ] {
        let line = with_key
            .iter()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no {event:?} event with key={digest} in:\n{logs}"));
        for field in ["layer=\"circuit_breaker\"", "name=\"clients\""] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_config_applies_to_every_key_and_to_the_keys_to_come() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = KeyedCircuitBreakerLayer::new(config().name("hosts")).per(|c: &Call| c.0);
    let handle = layer.handle();
    let mut svc = layer.layer(hosts(calls.clone()));
    let _ = send(&mut svc, "a", true).await;
    assert_eq!(handle.len(), 1);

    let renamed = handle.set_config(config().name("other").consecutive_failures(nz(1)));
    assert!(renamed.is_err());
    let _ = send(&mut svc, "z", true).await;
    assert_eq!(
        handle.get(&"z").unwrap().state(),
        State::Closed,
        "a refused config applied to a new key"
    );

    handle
        .set_config(config().name("hosts").consecutive_failures(nz(3)))
        .unwrap();
    // Key "a" keeps its one failure and needs two more.
    let _ = send(&mut svc, "a", true).await;
    assert_eq!(handle.get(&"a").unwrap().state(), State::Closed);
    let _ = send(&mut svc, "a", true).await;
    assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
    // A new key is created with the new settings.
    for _ in 0..2 {
        let _ = send(&mut svc, "b", true).await;
    }
    assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
    let _ = send(&mut svc, "b", true).await;
    assert_eq!(handle.get(&"b").unwrap().state(), State::Open);
    assert_eq!(
        format!("{:?}", handle.config()),
        format!("{:?}", config().name("hosts").consecutive_failures(nz(3)))
    );
}
