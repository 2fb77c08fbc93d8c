#![cfg(feature = "circuit-breaker")]
//! Circuit breaker: tripping, windows, half-open probes, forced states,
//! backoff, shared state, keyed breakers and fallbacks, on paused time.

#[cfg(feature = "http")]
mod grpc;
#[cfg(all(feature = "http", feature = "axum"))]
mod http;
mod keyed;
mod metrics;
mod probes;
mod reconfigure;
#[cfg(feature = "redis")]
mod shared;
#[path = "../support/mod.rs"]
mod support;
mod window;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use palisade::circuit_breaker::{
    CircuitBreakerLayer, Config, Error, FallbackLayer, Outcome, Reason, State, Transition,
};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

pub(crate) const SEC: Duration = Duration::from_secs(1);

pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// What the test backend should do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Ok,
    Fail,
    /// A client error: classified as ignored by [`ignore_client_errors`].
    Client,
    /// Succeeds after this long.
    Slow(Duration),
}

/// A backend that counts the calls reaching it.
pub(crate) fn backend(
    calls: Arc<AtomicUsize>,
) -> impl Service<Req, Response = &'static str, Error = &'static str, Future: Send> + Clone + Send {
    service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match req {
                Req::Ok => Ok("ok"),
                Req::Fail => Err("boom"),
                Req::Client => Err("bad request"),
                Req::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok("slow")
                }
            }
        }
    })
}

pub(crate) fn ignore_client_errors(result: &Result<&'static str, &'static str>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err("bad request") => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

pub(crate) type Res = Result<&'static str, Error<&'static str>>;

pub(crate) async fn send<S>(svc: &mut S, req: Req) -> Res
where
    S: Service<Req, Response = &'static str, Error = Error<&'static str>>,
{
    svc.ready().await?.call(req).await
}

pub(crate) fn assert_open(res: Res) -> Duration {
    match res {
        Err(Error::Open { retry_after }) => retry_after,
        other => panic!("expected the breaker to reject, got {other:?}"),
    }
}

/// The state is created once, by `new`: a handle taken before anything
/// else steers the breaker of every service built from the layer, from a
/// clone of it, and after a type-changing `classify`.
#[tokio::test(start_paused = true)]
async fn a_handle_taken_right_after_new_steers_every_service_of_the_layer_and_its_clones() {
    let layer = CircuitBreakerLayer::new(Config::new().consecutive_failures(nz(2)));
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let clone = layer.clone();
    let mut first = layer.layer(backend(calls.clone()));
    let mut second = clone.layer(backend(calls.clone()));
    let mut classified = clone
        .classify(ignore_client_errors)
        .layer(backend(calls.clone()));

    handle.force_open();
    assert_open(send(&mut first, Req::Ok).await);
    assert_open(send(&mut second, Req::Ok).await);
    assert_open(send(&mut classified, Req::Ok).await);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    handle.reset();
    assert_eq!(send(&mut first, Req::Ok).await.unwrap(), "ok");
    // Failures through two services trip the one breaker the handle reads.
    let _ = send(&mut second, Req::Fail).await;
    let _ = send(&mut classified, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
    assert_open(send(&mut first, Req::Ok).await);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn trips_after_exactly_the_threshold_and_not_one_call_before() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(Config::default()); // default: 5 in a row
    let handle = layer.handle();
    let mut svc = layer.layer(backend(calls.clone()));

    for _ in 0..4 {
        assert!(matches!(
            send(&mut svc, Req::Fail).await,
            Err(Error::Inner("boom"))
        ));
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 4);
    // A success resets the streak.
    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), "ok");
    assert_eq!(handle.metrics().consecutive_failures, 0);
    for _ in 0..4 {
        let _ = send(&mut svc, Req::Fail).await;
    }
    assert_eq!(handle.state(), State::Closed);
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_neither_count_nor_reset_the_streak() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(Config::new().consecutive_failures(nz(3)))
        .classify(ignore_client_errors);
    let handle = layer.handle();
    let mut svc = layer.layer(backend(calls.clone()));

    let _ = send(&mut svc, Req::Fail).await;
    let _ = send(&mut svc, Req::Fail).await;
    for _ in 0..10 {
        assert!(matches!(
            send(&mut svc, Req::Client).await,
            Err(Error::Inner("bad request"))
        ));
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 2);
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_without_calling_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(2))
            .open_wait(30 * SEC),
    );
    let mut svc = layer.layer(backend(calls.clone()));
    let _ = send(&mut svc, Req::Fail).await;
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for _ in 0..100 {
        assert_eq!(assert_open(send(&mut svc, Req::Ok).await), 30 * SEC);
    }
    advance(10 * SEC).await;
    assert_eq!(assert_open(send(&mut svc, Req::Ok).await), 20 * SEC);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the inner service was called while open"
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_not_pending_while_open_even_if_the_inner_service_is() {
    let (mock, mut inner) = tower_test::mock::pair::<Req, &'static str>();
    inner.allow(0); // the inner service is never ready
    let layer = CircuitBreakerLayer::new(Config::default());
    let handle = layer.handle();
    let mut svc = tower_test::mock::Spawn::new(layer.layer(mock));

    // Closed: readiness is the inner service's.
    assert!(svc.poll_ready().is_pending());
    handle.force_open();
    // The service that was waiting on the inner service notices the change.
    match svc.poll_ready() {
        Poll::Ready(Ok(())) => {}
        other => panic!("expected ready while open, got {other:?}"),
    }
    let err = svc.call(Req::Ok).await.unwrap_err();
    assert!(err.is_open());
}

#[tokio::test(start_paused = true)]
async fn clones_and_every_service_of_a_layer_share_one_breaker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(Config::new().consecutive_failures(nz(3)));
    let handle = layer.handle();
    let mut a = layer.layer(backend(calls.clone()));
    let mut b = layer.clone().layer(backend(calls.clone()));
    let mut c = a.clone();

    let _ = send(&mut a, Req::Fail).await;
    let _ = send(&mut b, Req::Fail).await;
    assert_eq!(handle.state(), State::Closed);
    let _ = send(&mut c, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
    for svc in [&mut a, &mut b, &mut c] {
        assert_open(send(svc, Req::Ok).await);
    }
    assert_eq!(a.handle().state(), State::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn forced_states_and_disabled_override_the_counts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(Config::new().count_window(nz(10)).minimum_calls(nz(2)));
    let handle = layer.handle();
    let mut svc = layer.layer(backend(calls.clone()));

    handle.force_open();
    assert_eq!(handle.state(), State::ForcedOpen);
    assert_open(send(&mut svc, Req::Ok).await);
    advance(3600 * SEC).await;
    assert_open(send(&mut svc, Req::Ok).await);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    handle.force_closed();
    for _ in 0..20 {
        assert!(matches!(
            send(&mut svc, Req::Fail).await,
            Err(Error::Inner(_))
        ));
    }
    assert_eq!(handle.state(), State::ForcedClosed);
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.calls_in_window, metrics.failures_in_window),
        (10, 10)
    );
    assert_eq!(metrics.failure_rate, Some(1.0));

    handle.disable();
    for _ in 0..20 {
        let _ = send(&mut svc, Req::Fail).await;
    }
    assert_eq!(handle.state(), State::Disabled);
    assert_eq!(
        handle.metrics().calls_in_window,
        0,
        "disabled counts nothing"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 40);

    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    let _ = send(&mut svc, Req::Fail).await;
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open, "a reset breaker trips again");
}

#[tokio::test(start_paused = true)]
async fn transitions_are_broadcast_with_reason_and_rates() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(4))
            .minimum_calls(nz(4))
            .open_wait(5 * SEC),
    );
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend(calls));
    for req in [Req::Ok, Req::Fail, Req::Ok, Req::Fail] {
        let _ = send(&mut svc, req).await;
    }
    let t: Transition = events.try_recv().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Closed, State::Open, Reason::FailureRate)
    );
    assert_eq!(t.failure_rate, Some(0.5));
    assert_eq!(t.open_for, Some(5 * SEC));
    advance(5 * SEC).await;
    let _ = send(&mut svc, Req::Ok).await;
    let t = events.try_recv().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Open, State::HalfOpen, Reason::WaitElapsed)
    );
    let t = events.try_recv().unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::HalfOpen, State::Closed, Reason::ProbesSucceeded)
    );
    assert!(events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_is_capped_and_resets_after_closing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(1))
            .open_wait(10 * SEC)
            .backoff(2.0, 35 * SEC),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(calls.clone()));

    let _ = send(&mut svc, Req::Fail).await;
    let mut waits = vec![assert_open(send(&mut svc, Req::Ok).await)];
    for _ in 0..3 {
        advance(*waits.last().unwrap()).await;
        // The probe fails: open again, for longer.
        assert!(matches!(
            send(&mut svc, Req::Fail).await,
            Err(Error::Inner(_))
        ));
        waits.push(assert_open(send(&mut svc, Req::Ok).await));
    }
    assert_eq!(waits, [10 * SEC, 20 * SEC, 35 * SEC, 35 * SEC]);
    assert_eq!(handle.metrics().trips, 4);

    advance(35 * SEC).await;
    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Closed);
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(
        assert_open(send(&mut svc, Req::Ok).await),
        10 * SEC,
        "backoff resets"
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_chosen_errors_and_passes_the_rest() {
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::new(Config::new().consecutive_failures(nz(2)));
    let handle = breaker.handle();
    // Recommendations unavailable: serve an empty list when the breaker is
    // open or the backend failed; pass client errors on.
    let fallback = FallbackLayer::new(|err: Error<&'static str>| match err {
        Error::Open { .. } | Error::Inner("boom") => Ok("[]"),
        err => Err(err),
    });
    let mut svc = fallback.layer(breaker.layer(backend(calls.clone())));

    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), "ok");
    assert_eq!(send(&mut svc, Req::Fail).await.unwrap(), "[]");
    assert!(matches!(
        send(&mut svc, Req::Client).await,
        Err(Error::Inner("bad request"))
    ));
    assert_eq!(handle.state(), State::Open);
    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), "[]");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn invalid_rates_are_errors() {
    use palisade::circuit_breaker::Rate;
    for bad in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
        let err = Rate::new(bad).unwrap_err();
        assert!(err.to_string().contains("(0, 1]"), "{err}");
    }
    assert!(Rate::percent(0).is_err());
    assert!(Rate::percent(101).is_err());
    assert_eq!(Rate::percent(100).unwrap(), Rate::ALL);
}

#[tokio::test(start_paused = true)]
async fn transitions_and_rejections_are_traced() {
    let logs = support::CapturedLogs::start();

    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(2))
            .minimum_calls(nz(2))
            .name("recommendations"),
    );
    let mut svc = layer.layer(backend(Arc::default()));
    let _ = send(&mut svc, Req::Fail).await;
    let _ = send(&mut svc, Req::Fail).await;
    assert_open(send(&mut svc, Req::Ok).await);

    let logs = logs.text();
    let transition = logs
        .lines()
        .find(|l| l.contains("circuit breaker state changed"))
        .unwrap_or_else(|| panic!("no transition event in:\n{logs}"));
    for field in [
        "WARN",
        "layer=\"circuit_breaker\"",
        "name=\"recommendations\"",
        "from=closed",
        "to=open",
        "reason=failure rate",
        "failure_rate=1.0",
    ] {
        assert!(
            transition.contains(field),
            "{field} missing in {transition}"
        );
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("DEBUG") && l.contains("circuit breaker rejected a call")),
        "no rejection event in:\n{logs}"
    );
}

/// Many tasks on several threads hammer one breaker: it trips exactly once,
/// and the counts never pass the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_trip_the_breaker_exactly_once() {
    for layer in [
        CircuitBreakerLayer::new(
            Config::new()
                .consecutive_failures(nz(50))
                .open_wait(3600 * SEC),
        ),
        CircuitBreakerLayer::new(
            Config::new()
                .count_window(nz(64))
                .minimum_calls(nz(64))
                .open_wait(3600 * SEC),
        ),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let handle = layer.handle();
        let mut events = handle.subscribe();
        let svc = layer.layer(backend(calls.clone()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    for _ in 0..500 {
                        let _ = send(&mut svc, Req::Fail).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(handle.state(), State::Open);
        assert_eq!(handle.metrics().trips, 1);
        let t = events.try_recv().unwrap();
        assert_eq!((t.from, t.to), (State::Closed, State::Open));
        assert!(events.try_recv().is_err(), "tripped more than once");
        assert!(handle.metrics().calls_in_window <= 64);
        // Calls let through before the trip, at most one in flight per task
        // beyond the threshold.
        assert!(calls.load(Ordering::SeqCst) <= 64 + 8, "{calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn decisions_are_events_with_the_uniform_fields() {
    let logs = support::CapturedLogs::start();
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(1))
            .name("recommendations"),
    );
    let mut svc = layer.layer(backend(Arc::default()));
    send(&mut svc, Req::Slow(Duration::from_millis(1500)))
        .await
        .unwrap();
    let _ = send(&mut svc, Req::Fail).await;
    assert_open(send(&mut svc, Req::Ok).await);

    let logs = logs.text();
    let line = |outcome: &str| {
        logs.lines()
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{logs}"))
            .to_owned()
    };
    // Allowed calls at TRACE, with the call's duration even though this
    // breaker does not time calls for itself (the event is enabled).
    let success = line("success");
    for field in [
        "TRACE",
        "layer=\"circuit_breaker\"",
        "name=\"recommendations\"",
        "latency_us=1500000",
    ] {
        assert!(success.contains(field), "{field} missing in {success}");
    }
    assert!(line("failure").contains("TRACE"));
    let rejected = line("rejected");
    for field in [
        "DEBUG",
        "layer=\"circuit_breaker\"",
        "name=\"recommendations\"",
        "state=open",
    ] {
        assert!(rejected.contains(field), "{field} missing in {rejected}");
    }
    // An unkeyed breaker has no key field.
    assert!(!logs.contains("key="), "{logs}");
}
