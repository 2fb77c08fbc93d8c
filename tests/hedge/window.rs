//! The delay is a percentile of the latencies of the last window; old
//! latencies expire; settings out of range are refused.

use std::time::Duration;

use palisade::attempt::ErrorIsRetryable;
use palisade::hedge::{ConfigError, HedgeLayer};
use tower::ServiceExt;

use crate::{Job, Plan, layer, ms, nz, setup};

#[tokio::test(start_paused = true)]
async fn the_delay_is_the_percentile_of_the_window() {
    // No hedges: they would take latencies from the plan.
    let layer = layer().percentile(0.5).unwrap().max_hedges(0);
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    // 1, 2, ..., 100 ms: the median is 50 ms.
    backend.then((1..=100).map(Plan::Ok));
    for _ in 0..100 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    assert_eq!(handle.samples(), 100);
    let median = handle.latency(0.5).unwrap();
    assert!(median >= ms(50) && median <= ms(50) * 33 / 32, "{median:?}");
    // The delay is computed again every few latencies, not on each one.
    let delay = handle.delay().unwrap();
    assert!(delay >= ms(45) && delay <= median, "{delay:?}");
    let p99 = handle.latency(0.99).unwrap();
    assert!(p99 >= ms(99) && p99 <= ms(99) * 33 / 32, "{p99:?}");
}

#[tokio::test(start_paused = true)]
async fn old_latencies_expire_and_the_delay_follows_the_new_ones() {
    let layer = layer().window(Duration::from_secs(4)).unwrap();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    backend.then((0..10).map(|_| Plan::Ok(100)));
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    assert!(handle.delay().unwrap() >= ms(100));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(handle.samples(), 0, "a whole window later");
    assert_eq!(handle.delay(), None, "no hedge on expired latencies");
    backend.then((0..10).map(|_| Plan::Ok(5)));
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    let delay = handle.delay().unwrap();
    assert!(delay >= ms(5) && delay < ms(6), "{delay:?}");
}

#[tokio::test(start_paused = true)]
async fn min_delay_is_a_floor() {
    let layer = layer().min_delay(ms(40));
    let handle = layer.handle();
    let (svc, _backend) = setup(&layer);
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    assert_eq!(handle.delay(), Some(ms(40)), "10 ms latencies, floored");
}

#[test]
fn settings_out_of_range_are_refused() {
    let refused = |r: Result<HedgeLayer<ErrorIsRetryable>, ConfigError>| r.unwrap_err().to_string();
    let new = || HedgeLayer::new(ErrorIsRetryable);
    for p in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
        assert_eq!(
            refused(new().percentile(p)),
            "percentile: more than 0 and less than 1"
        );
    }
    assert_eq!(
        refused(new().window(Duration::ZERO)),
        "window: more than zero"
    );
    assert!(new().percentile(0.999).is_ok());
    assert!(new().window(Duration::MAX).is_ok(), "saturates");
    let _ = nz(1);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_once_the_window_has_fewer_than_min_samples_again() {
    // A 4 s window in 1 s steps, hedging from 10 latencies.
    let layer = layer().window(Duration::from_secs(4)).unwrap();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    // Nine latencies in the first second, the tenth three seconds later:
    // the delay is computed then, from ten.
    for _ in 0..9 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    svc.clone().oneshot(Job).await.unwrap();
    assert!(handle.delay().is_some(), "ten latencies");
    // A second later the first nine have expired: one is left.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(handle.samples(), 1);
    assert_eq!(handle.delay(), None, "one latency of ten");
    backend.then([Plan::Ok(1000)]);
    let before = backend.counts.started();
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), before + 1, "no hedge");
}

#[tokio::test(start_paused = true)]
async fn the_longest_settings_saturate_without_a_hedge_or_a_panic() {
    let layer = layer()
        .window(Duration::MAX)
        .unwrap()
        .min_delay(Duration::MAX)
        .percentile(0.999_999)
        .unwrap();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    let delay = handle.delay().expect("10 samples");
    assert!(delay > Duration::from_secs(86_400 * 365 * 100), "{delay:?}");
    backend.then([Plan::Ok(1000)]);
    let before = backend.counts.started();
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), before + 1, "no hedge");
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    assert_eq!(handle.samples(), 11, "a window that never moves");
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_after_the_delay_still_counts_among_the_slow_ones() {
    // A timeout above the hedge drops slow requests: they must not vanish
    // from the window, or the delay would only see the fast ones.
    let layer = layer().max_hedges(0);
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    crate::warm(&svc, 10).await;
    assert!(handle.delay().is_some());
    backend.then((0..4).map(|_| Plan::Ok(1000)));
    for _ in 0..3 {
        let cut = tokio::time::timeout(ms(100), svc.clone().oneshot(Job)).await;
        assert!(cut.is_err(), "dropped by the timeout");
    }
    assert_eq!(handle.samples(), 13);
    let p95 = handle.latency(0.95).unwrap();
    assert!(p95 >= ms(100), "{p95:?}");
    // Dropped before the delay, a request says nothing of the latency.
    let early = tokio::time::timeout(ms(1), svc.clone().oneshot(Job)).await;
    assert!(early.is_err());
    assert_eq!(handle.samples(), 13);
}
