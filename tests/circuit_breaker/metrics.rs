//! The breaker's counters and state gauge after known sequences of calls,
//! read from a `DebuggingRecorder` installed for this thread only.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use palisade::circuit_breaker::{
    CircuitBreakerLayer, Config, Error, KeyedCircuitBreakerLayer, Outcome, Rate, State,
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::support::metric_values;
use crate::{SEC, assert_open, nz};

/// Runs `test` with a debugging recorder local to this thread, on a
/// current-thread runtime with paused time. `test` gets a function that
/// returns the values recorded since its last call (the snapshot resets
/// them), without the entries left at zero.
fn with_recorder<F: Future<Output = ()>>(test: impl FnOnce(Snap) -> F) {
    let recorder = DebuggingRecorder::new();
    let snap = Snap(Arc::new(recorder.snapshotter()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test(snap)));
}

#[derive(Clone)]
struct Snap(Arc<Snapshotter>);

impl Snap {
    /// Every palisade breaker series recorded since the last snapshot,
    /// zeros included.
    fn all(&self) -> BTreeMap<String, f64> {
        metric_values(&self.0, "palisade_circuit_breaker")
    }
}

fn calls(name: &str, outcome: &str) -> String {
    format!("palisade_circuit_breaker_calls_total{{name=\"{name}\",outcome=\"{outcome}\"}}")
}

fn transitions(name: &str, from: &str, to: &str) -> String {
    format!(
        "palisade_circuit_breaker_transitions_total{{name=\"{name}\",from=\"{from}\",to=\"{to}\"}}"
    )
}

fn state(name: &str, state: &str) -> String {
    format!("palisade_circuit_breaker_state{{name=\"{name}\",state=\"{state}\"}}")
}

const STATES: [&str; 6] = [
    "closed",
    "open",
    "half_open",
    "forced_open",
    "forced_closed",
    "disabled",
];

/// The six state series of `name`, 1 for `current`.
fn gauge(name: &str, current: &str) -> Vec<(String, f64)> {
    STATES
        .iter()
        .map(|s| (state(name, s), if *s == current { 1.0 } else { 0.0 }))
        .collect()
}

/// A call: succeed or fail (with a client error, classified as ignored),
/// after `delay`.
#[derive(Debug, Clone, Copy)]
enum Call {
    Ok(Duration),
    Fail(Duration),
    Client,
}

fn backend() -> impl Service<Call, Response = (), Error = &'static str> + Clone {
    service_fn(|call: Call| async move {
        match call {
            Call::Ok(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Call::Fail(delay) => {
                tokio::time::sleep(delay).await;
                Err("boom")
            }
            Call::Client => Err("bad request"),
        }
    })
}

fn classify(result: &Result<(), &'static str>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err("bad request") => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

async fn send<S>(svc: &mut S, call: Call) -> Result<(), Error<&'static str>>
where
    S: Service<Call, Response = (), Error = Error<&'static str>>,
{
    svc.ready().await?.call(call).await
}

const FAST: Duration = Duration::ZERO;
const SLOW: Duration = Duration::from_secs(2);

#[test]
fn calls_transitions_and_state_are_recorded_for_a_sequence() {
    with_recorder(|snap| async move {
        let layer = CircuitBreakerLayer::new(
            Config::new()
                .consecutive_failures(nz(3))
                .slow_calls(SEC, Rate::ALL)
                .open_wait(10 * SEC)
                .name("payments"),
        )
        .classify(classify);
        let handle = layer.handle();
        let mut svc = layer.layer(backend());

        send(&mut svc, Call::Ok(FAST)).await.unwrap();
        let _ = send(&mut svc, Call::Client).await;
        // Slow calls count as failures in consecutive mode: the third trips.
        send(&mut svc, Call::Ok(SLOW)).await.unwrap();
        let _ = send(&mut svc, Call::Fail(FAST)).await;
        let _ = send(&mut svc, Call::Fail(SLOW)).await;
        assert_eq!(handle.state(), State::Open);

        let mut expected = BTreeMap::from([
            (calls("payments", "success"), 1.0),
            (calls("payments", "ignored"), 1.0),
            (calls("payments", "slow_success"), 1.0),
            (calls("payments", "failure"), 1.0),
            (calls("payments", "slow_failure"), 1.0),
            (transitions("payments", "closed", "open"), 1.0),
        ]);
        // The breakers the setters made (and dropped) on the way, unnamed,
        // left no `default` series.
        expected.extend(gauge("payments", "open"));
        assert_eq!(snap.all(), expected);

        // Two rejections, then a probe after the wait closes the breaker.
        assert_open(send(&mut svc, Call::Ok(FAST)).await.map(|()| "ok"));
        assert_open(send(&mut svc, Call::Ok(FAST)).await.map(|()| "ok"));
        tokio::time::advance(10 * SEC).await;
        send(&mut svc, Call::Ok(FAST)).await.unwrap();
        assert_eq!(handle.state(), State::Closed);
        // Forced states through the handle are transitions too.
        handle.force_open();
        assert_open(send(&mut svc, Call::Ok(FAST)).await.map(|()| "ok"));
        handle.disable();
        send(&mut svc, Call::Fail(FAST)).await.unwrap_err();
        handle.reset();
        // Unnamed: the `default` name, its gauge set by its first service.
        let unnamed = CircuitBreakerLayer::new(Config::default());
        unnamed.handle().force_open();
        let _svc = unnamed.layer(backend());

        let recorded: BTreeMap<String, f64> = snap
            .all()
            .into_iter()
            .filter(|(key, value)| *value != 0.0 || key.contains("_state{"))
            .collect();
        let mut expected = BTreeMap::from([
            (calls("payments", "rejected"), 3.0),
            (calls("payments", "success"), 1.0),
            (calls("payments", "disabled"), 1.0),
            (transitions("payments", "open", "half_open"), 1.0),
            (transitions("payments", "half_open", "closed"), 1.0),
            (transitions("payments", "closed", "forced_open"), 1.0),
            (transitions("payments", "forced_open", "disabled"), 1.0),
            (transitions("payments", "disabled", "closed"), 1.0),
        ]);
        expected.extend(gauge("payments", "closed"));
        expected.insert(transitions("default", "closed", "forced_open"), 1.0);
        expected.extend(gauge("default", "forced_open"));
        assert_eq!(recorded, expected);
    });
}

#[test]
fn a_keyed_breaker_counts_under_its_name_and_gauges_keys_per_state() {
    with_recorder(|snap| async move {
        let config = Config::new().consecutive_failures(nz(1)).name("hosts");
        let layer = KeyedCircuitBreakerLayer::new(config)
            .per(|c: &(&'static str, bool)| c.0)
            .max_keys(NonZeroUsize::new(3).unwrap());
        let mut svc = layer.layer(service_fn(
            |(host, fail): (&'static str, bool)| async move {
                if fail { Err("boom") } else { Ok(host) }
            },
        ));
        let mut send = async |host: &'static str, fail: bool| {
            svc.ready().await.unwrap().call((host, fail)).await
        };
        send("billing.internal", true).await.unwrap_err();
        send("search.internal", true).await.unwrap_err();
        send("users.internal", false).await.unwrap();
        assert!(matches!(
            send("billing.internal", false).await,
            Err(Error::Open { .. })
        ));
        // A fourth key: the least recently used closed key is forgotten.
        send("mail.internal", false).await.unwrap();

        let mut expected = BTreeMap::from([
            (calls("hosts", "failure"), 2.0),
            (calls("hosts", "success"), 2.0),
            (calls("hosts", "rejected"), 1.0),
            (transitions("hosts", "closed", "open"), 2.0),
        ]);
        // Keys per state: billing and search open; mail closed (users forgotten).
        expected.extend(gauge("hosts", "none"));
        expected.insert(state("hosts", "open"), 2.0);
        expected.insert(state("hosts", "closed"), 1.0);
        let recorded = snap.all();
        assert_eq!(recorded, expected);
        assert!(
            recorded.keys().all(|k| !k.contains(".internal")),
            "a key in a label: {recorded:?}"
        );
    });
}
