//! Settings replaced at run time through the handle: thresholds, rates,
//! waits, probes and windows change from the next call on, the state stays,
//! and the name cannot change.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{
    CircuitBreakerLayer, Config, Error, Handle, InvalidConfig, Rate, Reason, State,
};
use tokio::time::advance;
use tower::{Layer, Service};

use crate::{Req, Res, SEC, assert_open, backend, nz, send};

fn breaker(
    config: Config,
) -> (
    impl Service<Req, Response = &'static str, Error = Error<&'static str>>,
    Handle,
) {
    let layer = CircuitBreakerLayer::new(config);
    let handle = layer.handle();
    (layer.layer(backend(Arc::new(AtomicUsize::new(0)))), handle)
}

async fn fail<S>(svc: &mut S, n: usize)
where
    S: Service<Req, Response = &'static str, Error = Error<&'static str>>,
{
    for _ in 0..n {
        assert!(matches!(
            send(svc, Req::Fail).await,
            Err(Error::Inner("boom"))
        ));
    }
}

fn ok(res: Res) {
    assert_eq!(res.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn a_threshold_lowered_to_the_streak_trips_on_the_next_failure() {
    let (mut svc, handle) = breaker(Config::new().consecutive_failures(nz(5)));
    fail(&mut svc, 3).await;
    assert_eq!(handle.metrics().consecutive_failures, 3);

    handle
        .set_config(Config::new().consecutive_failures(nz(3)))
        .unwrap();
    // The streak is kept; reaching the new threshold by itself trips nothing.
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 3);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_threshold_raised_above_the_streak_needs_the_rest_of_the_failures() {
    let (mut svc, handle) = breaker(Config::new().consecutive_failures(nz(5)));
    fail(&mut svc, 3).await;

    handle
        .set_config(Config::new().consecutive_failures(nz(10)))
        .unwrap();
    // Two more would have tripped the old threshold of 5.
    fail(&mut svc, 6).await;
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 9);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_keeps_its_remaining_wait_and_the_new_wait_applies_from_the_next_trip() {
    let (mut svc, handle) = breaker(
        Config::new()
            .consecutive_failures(nz(1))
            .open_wait(30 * SEC),
    );
    let mut transitions = handle.subscribe();
    fail(&mut svc, 1).await;
    assert_eq!(transitions.recv().await.unwrap().open_for, Some(30 * SEC));
    advance(10 * SEC).await;

    handle
        .set_config(Config::new().consecutive_failures(nz(1)).open_wait(5 * SEC))
        .unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(assert_open(send(&mut svc, Req::Ok).await), 20 * SEC);
    advance(19 * SEC).await;
    assert_eq!(assert_open(send(&mut svc, Req::Ok).await), SEC);
    advance(SEC).await;

    // The wait is over: a probe goes through, fails, and the breaker opens
    // again for the new wait.
    fail(&mut svc, 1).await;
    let reopened = loop {
        let t = transitions.recv().await.unwrap();
        if t.to == State::Open {
            break t;
        }
    };
    assert_eq!(reopened.reason, Reason::ProbeFailed);
    assert_eq!(reopened.open_for, Some(5 * SEC));
    assert_eq!(assert_open(send(&mut svc, Req::Ok).await), 5 * SEC);
}

#[tokio::test(start_paused = true)]
async fn probes_raised_while_half_open_need_the_new_count_to_close() {
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(SEC)
        .half_open_probes(nz(2));
    let (mut svc, handle) = breaker(config.clone());
    fail(&mut svc, 1).await;
    advance(SEC).await;
    ok(send(&mut svc, Req::Ok).await);
    assert_eq!(handle.state(), State::HalfOpen);

    handle.set_config(config.half_open_probes(nz(4))).unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    ok(send(&mut svc, Req::Ok).await);
    ok(send(&mut svc, Req::Ok).await);
    assert_eq!(
        handle.state(),
        State::HalfOpen,
        "closed on the old count of probes"
    );
    ok(send(&mut svc, Req::Ok).await);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn probes_lowered_to_the_successes_already_in_close_the_breaker_at_once() {
    let config = Config::new()
        .consecutive_failures(nz(1))
        .open_wait(SEC)
        .half_open_probes(nz(3));
    let (mut svc, handle) = breaker(config.clone());
    let mut transitions = handle.subscribe();
    fail(&mut svc, 1).await;
    advance(SEC).await;
    ok(send(&mut svc, Req::Ok).await);
    ok(send(&mut svc, Req::Ok).await);
    assert_eq!(handle.state(), State::HalfOpen);

    // Two probes succeeded, and two are now enough: no third probe would be
    // let through to close it.
    handle.set_config(config.half_open_probes(nz(2))).unwrap();
    assert_eq!(handle.state(), State::Closed);
    let closed = loop {
        let t = transitions.recv().await.unwrap();
        if t.to == State::Closed {
            break t;
        }
    };
    assert_eq!(closed.reason, Reason::ProbesSucceeded);
}

#[tokio::test(start_paused = true)]
async fn a_window_of_the_same_kind_and_size_keeps_its_counts_under_the_new_rate() {
    let config = Config::new()
        .count_window(nz(10))
        .minimum_calls(nz(4))
        .failure_rate(Rate::new(0.9).unwrap());
    let (mut svc, handle) = breaker(config.clone());
    fail(&mut svc, 2).await;
    ok(send(&mut svc, Req::Ok).await);

    handle.set_config(config.failure_rate(Rate::HALF)).unwrap();
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.calls_in_window, metrics.failures_in_window),
        (3, 2)
    );
    // 3 failures of 4: under the old 0.9 the breaker would stay closed.
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.metrics().failure_rate, Some(0.75));
}

#[tokio::test(start_paused = true)]
async fn a_window_of_another_kind_or_size_starts_empty() {
    let config = Config::new()
        .count_window(nz(10))
        .minimum_calls(nz(4))
        .failure_rate(Rate::HALF);
    let (mut svc, handle) = breaker(config.clone());
    fail(&mut svc, 3).await;
    assert_eq!(handle.metrics().calls_in_window, 3);

    // Another size.
    handle
        .set_config(config.clone().count_window(nz(20)))
        .unwrap();
    assert_eq!(handle.metrics().calls_in_window, 0);
    // The three failures are gone: three more do not reach the minimum.
    fail(&mut svc, 3).await;
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().failures_in_window, 3);

    // Another kind.
    handle
        .set_config(config.clone().time_window(10 * SEC, nz(10)))
        .unwrap();
    assert_eq!(handle.metrics().calls_in_window, 0);
    fail(&mut svc, 3).await;
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().calls_in_window, 3);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_consecutive_streak_does_not_survive_a_window_mode() {
    let (mut svc, handle) = breaker(Config::new().consecutive_failures(nz(3)));
    fail(&mut svc, 2).await;

    handle
        .set_config(Config::new().count_window(nz(10)).minimum_calls(nz(10)))
        .unwrap();
    assert_eq!(handle.metrics().consecutive_failures, 0);
    assert_eq!(handle.metrics().calls_in_window, 0);
    handle
        .set_config(Config::new().consecutive_failures(nz(3)))
        .unwrap();
    // The two failures of before do not count: three more are needed.
    fail(&mut svc, 2).await;
    assert_eq!(handle.state(), State::Closed);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_switched_on_count_from_the_next_call() {
    let config = Config::new().consecutive_failures(nz(2));
    let (mut svc, handle) = breaker(config.clone());
    for _ in 0..3 {
        assert_eq!(send(&mut svc, Req::Slow(2 * SEC)).await.unwrap(), "slow");
    }
    assert_eq!(handle.state(), State::Closed);

    handle
        .set_config(config.slow_calls(SEC, Rate::HALF))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(send(&mut svc, Req::Slow(2 * SEC)).await.unwrap(), "slow");
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_config_with_another_name_is_refused_and_changes_nothing() {
    let config = Config::new()
        .name("payments")
        .consecutive_failures(nz(2))
        .open_wait(30 * SEC);
    let layer = CircuitBreakerLayer::new(config.clone());
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::new(AtomicUsize::new(0))));
    let before = format!("{:?}", handle.config());

    for other in [
        config.clone().name("billing").consecutive_failures(nz(1)),
        // No name is the default name, another one too.
        Config::new().consecutive_failures(nz(1)),
    ] {
        let refused = handle.set_config(other).unwrap_err();
        assert!(matches!(
            &refused,
            InvalidConfig::Renamed { name, .. } if name == "payments"
        ));
        assert!(refused.to_string().contains("payments"), "{refused}");
    }
    assert_eq!(format!("{:?}", handle.config()), before);
    assert_eq!(format!("{:?}", layer.config()), before);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Closed, "the threshold of 1 applied");
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);

    // The same name, and the settings in force are the new ones.
    let new = config.open_wait(5 * SEC);
    handle.set_config(new.clone()).unwrap();
    assert_eq!(format!("{:?}", handle.config()), format!("{new:?}"));
    assert_eq!(format!("{:?}", layer.config()), format!("{new:?}"));
}

#[tokio::test(start_paused = true)]
async fn an_unnamed_breaker_takes_an_unnamed_config_or_the_default_name() {
    let (_svc, handle) = breaker(Config::new());
    handle.set_config(Config::new()).unwrap();
    handle
        .set_config(Config::new().name(palisade::observability::DEFAULT_NAME))
        .unwrap();
    assert!(handle.set_config(Config::new().name("other")).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_forced_state_stays_through_a_new_config() {
    let (mut svc, handle) = breaker(Config::new().consecutive_failures(nz(5)));
    handle.force_open();
    handle
        .set_config(Config::new().consecutive_failures(nz(1)).open_wait(7 * SEC))
        .unwrap();
    assert_eq!(handle.state(), State::ForcedOpen);
    assert_eq!(assert_open(send(&mut svc, Req::Ok).await), 7 * SEC);
}

/// Calls on four threads while the settings change under them: nothing
/// panics, and the last settings given are the ones in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_set_config_and_calls_end_with_the_last_settings() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::new(Config::new().consecutive_failures(nz(3)));
    let handle = layer.handle();
    let configs = [
        Config::new()
            .consecutive_failures(nz(3))
            .open_wait(Duration::from_micros(50)),
        Config::new()
            .count_window(nz(20))
            .minimum_calls(nz(5))
            .open_wait(Duration::from_micros(50))
            .half_open_probes(nz(3)),
        Config::new()
            .time_window(Duration::from_millis(5), nz(5))
            .minimum_calls(nz(5))
            .slow_calls(Duration::from_micros(1), Rate::new(0.9).unwrap())
            .open_wait(Duration::from_micros(20)),
        Config::new()
            .consecutive_failures(nz(7))
            .open_wait(Duration::ZERO)
            .half_open_probes(nz(1))
            .backoff(2.0, Duration::from_micros(100)),
    ];

    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let mut svc = layer.layer(backend(calls.clone()));
        tasks.push(tokio::spawn(async move {
            for i in 0..5_000usize {
                let req = if (i + worker) % 3 == 0 {
                    Req::Fail
                } else {
                    Req::Ok
                };
                let _ = send(&mut svc, req).await;
            }
        }));
    }
    let setter = {
        let handle = handle.clone();
        let configs = configs.clone();
        tokio::spawn(async move {
            for i in 0..2_000usize {
                handle
                    .set_config(configs[i % configs.len()].clone())
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for task in tasks {
        task.await.expect("a calling task panicked");
    }
    setter.await.expect("the setting task panicked");
    assert!(calls.load(Ordering::SeqCst) > 0);

    let last = Config::new()
        .consecutive_failures(nz(2))
        .open_wait(3600 * SEC);
    handle.set_config(last.clone()).unwrap();
    assert_eq!(format!("{:?}", handle.config()), format!("{last:?}"));
    handle.reset();
    let mut svc = layer.layer(backend(calls.clone()));
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Closed);
    fail(&mut svc, 1).await;
    assert_eq!(handle.state(), State::Open);
    let wait = assert_open(send(&mut svc, Req::Ok).await);
    assert!(
        wait > 3500 * SEC,
        "the last open wait is not in force: {wait:?}"
    );
}
