//! Count and time windows, minimum calls and slow calls.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Outcome, Rate, Reason, State};
use proptest::prelude::*;
use tokio::time::advance;
use tower::Layer;

use crate::{Req, SEC, assert_open, backend, ignore_client_errors, nz, send};

#[tokio::test(start_paused = true)]
async fn minimum_calls_are_honoured() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(10))
            .minimum_calls(nz(5))
            .failure_rate(Rate::HALF),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    for _ in 0..4 {
        let _ = send(&mut svc, Req::Fail).await;
    }
    assert_eq!(
        handle.state(),
        State::Closed,
        "100% of 4 calls, but 5 are needed"
    );
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_opens_on_the_share_of_recent_failures_after_many_successes() {
    // A running total would need 1,000 failures here; the window needs 5.
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(10))
            .minimum_calls(nz(10))
            .failure_rate(Rate::HALF),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    for _ in 0..1000 {
        let _ = send(&mut svc, Req::Ok).await;
    }
    for _ in 0..4 {
        let _ = send(&mut svc, Req::Fail).await;
    }
    assert_eq!(handle.state(), State::Closed, "4 of the last 10 failed");
    assert_eq!(handle.metrics().failure_rate, Some(0.4));
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open, "5 of the last 10 failed");
}

#[tokio::test(start_paused = true)]
async fn failures_slide_out_of_the_count_window() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(4))
            .minimum_calls(nz(4))
            .failure_rate(Rate::new(0.75).unwrap()),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    // F F S S | S S F F: never 3 failures among the last 4.
    for req in [
        Req::Fail,
        Req::Fail,
        Req::Ok,
        Req::Ok,
        Req::Ok,
        Req::Ok,
        Req::Fail,
        Req::Fail,
    ] {
        let _ = send(&mut svc, req).await;
        assert_eq!(handle.state(), State::Closed);
    }
    let m = handle.metrics();
    assert_eq!((m.calls_in_window, m.failures_in_window), (4, 2));
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
}

/// Successes that slide out of a time window raise its failure rate: a
/// success that arrives as they leave trips the breaker.
#[tokio::test(start_paused = true)]
async fn a_success_trips_the_time_window_when_older_successes_leave_it() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .time_window(10 * SEC, nz(10))
            .minimum_calls(nz(2))
            .failure_rate(Rate::HALF),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    for _ in 0..3 {
        send(&mut svc, Req::Ok).await.unwrap();
    }
    advance(5 * SEC).await;
    for _ in 0..2 {
        let _ = send(&mut svc, Req::Fail).await;
    }
    // 2 failures in 5 calls.
    assert_eq!(handle.state(), State::Closed);
    advance(5 * SEC).await;
    // The three first successes leave the window as this one arrives:
    // 2 failures in 3 calls.
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.metrics().trips, 1);
}

#[tokio::test(start_paused = true)]
async fn the_time_window_slides() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .time_window(10 * SEC, nz(10))
            .minimum_calls(nz(3))
            .failure_rate(Rate::HALF),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    let _ = send(&mut svc, Req::Fail).await;
    let _ = send(&mut svc, Req::Fail).await;
    advance(5 * SEC).await;
    assert_eq!(
        handle.metrics().calls_in_window,
        2,
        "still inside the window"
    );
    advance(6 * SEC).await;
    assert_eq!(handle.metrics().calls_in_window, 0, "slid out after 10 s");

    // Had the old failures stayed, 3 of 5 would trip it.
    let _ = send(&mut svc, Req::Ok).await;
    let _ = send(&mut svc, Req::Ok).await;
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().failure_rate, Some(1.0 / 3.0));

    // Failures spread inside the window add up.
    advance(3 * SEC).await;
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open, "2 of 4 within 10 s");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_are_counted_and_trip_on_their_rate() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .count_window(nz(4))
            .minimum_calls(nz(4))
            .failure_rate(Rate::ALL)
            .slow_calls(SEC, Rate::HALF),
    );
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend(Arc::default()));
    assert_eq!(send(&mut svc, Req::Slow(2 * SEC)).await.unwrap(), "slow");
    // Just under the threshold: not slow.
    let _ = send(
        &mut svc,
        Req::Slow(SEC - std::time::Duration::from_millis(1)),
    )
    .await;
    let _ = send(&mut svc, Req::Ok).await;
    let m = handle.metrics();
    assert_eq!((m.calls_in_window, m.slow_calls_in_window), (3, 1));
    assert_eq!(handle.state(), State::Closed);
    // Exactly the threshold is slow: 2 of 4.
    let _ = send(&mut svc, Req::Slow(SEC)).await;
    assert_eq!(handle.state(), State::Open);
    let t = events.try_recv().unwrap();
    assert_eq!(t.reason, Reason::SlowCallRate);
    assert_eq!(t.slow_call_rate, Some(0.5));
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_as_failures_in_consecutive_mode() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(2))
            .slow_calls(SEC, Rate::ALL),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(backend(Arc::default()));
    let _ = send(&mut svc, Req::Slow(3 * SEC)).await;
    assert_eq!(handle.state(), State::Closed);
    let _ = send(&mut svc, Req::Fail).await;
    assert_eq!(handle.state(), State::Open);
    assert_open(send(&mut svc, Req::Ok).await);
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ok,
    Fail,
    Client,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![Just(Step::Ok), Just(Step::Fail), Just(Step::Client)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The count window against a plain model: a deque of the last N
    /// recorded outcomes. Counts agree after every call, and the breaker
    /// opens on exactly the call where the model's share reaches the rate.
    #[test]
    fn count_window_matches_a_deque_of_the_last_n_outcomes(
        size in 1u32..12,
        minimum in 1u32..14,
        percent in 1u8..=100,
        steps in prop::collection::vec(step(), 0..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let rate = Rate::percent(percent).unwrap();
            let layer = CircuitBreakerLayer::new(Config::new().count_window(nz(size)).minimum_calls(nz(minimum)).failure_rate(rate))
                .classify(ignore_client_errors);
            let handle = layer.handle();
            let mut svc = layer.layer(backend(Arc::new(AtomicUsize::new(0))));
            let mut model: VecDeque<bool> = VecDeque::new();
            for step in steps {
                let (req, outcome) = match step {
                    Step::Ok => (Req::Ok, Outcome::Success),
                    Step::Fail => (Req::Fail, Outcome::Failure),
                    Step::Client => (Req::Client, Outcome::Ignored),
                };
                let _ = send(&mut svc, req).await;
                if outcome != Outcome::Ignored {
                    model.push_back(outcome == Outcome::Failure);
                    if model.len() > size as usize {
                        model.pop_front();
                    }
                }
                let calls = model.len() as u32;
                let failures = model.iter().filter(|f| **f).count() as u32;
                let trips = calls >= minimum.min(size).max(1)
                    && f64::from(failures) / f64::from(calls) >= rate.get();
                if trips {
                    prop_assert_eq!(handle.state(), State::Open);
                    return Ok(());
                }
                prop_assert_eq!(handle.state(), State::Closed);
                let m = handle.metrics();
                prop_assert_eq!((m.calls_in_window, m.failures_in_window), (calls, failures));
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// The time window against a plain model: every call with its time,
    /// counted while its bucket is one of the last `buckets` buckets.
    #[test]
    fn time_window_matches_a_list_of_timed_outcomes(
        buckets in 1u32..8,
        bucket_ms in 1u64..500,
        steps in prop::collection::vec((0u64..1500, any::<bool>()), 0..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let length = std::time::Duration::from_millis(bucket_ms * u64::from(buckets));
            let layer = CircuitBreakerLayer::new(Config::new().time_window(length, nz(buckets)));
            let handle = layer.handle();
            // Forced closed: the window counts but never trips.
            handle.force_closed();
            let origin = tokio::time::Instant::now();
            let mut svc = layer.layer(backend(Arc::new(AtomicUsize::new(0))));
            let mut model: Vec<(u64, bool)> = Vec::new();
            for (wait_ms, fail) in steps {
                advance(std::time::Duration::from_millis(wait_ms)).await;
                let _ = send(&mut svc, if fail { Req::Fail } else { Req::Ok }).await;
                let now_ms = origin.elapsed().as_millis() as u64;
                model.push((now_ms, fail));
                let epoch = now_ms / bucket_ms;
                let live: Vec<bool> = model
                    .iter()
                    .filter(|(t, _)| epoch - t / bucket_ms < u64::from(buckets))
                    .map(|(_, f)| *f)
                    .collect();
                let m = handle.metrics();
                prop_assert_eq!(m.calls_in_window, live.len() as u32);
                prop_assert_eq!(m.failures_in_window, live.iter().filter(|f| **f).count() as u32);
            }
            Ok(())
        })?;
    }
}
