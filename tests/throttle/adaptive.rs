//! The SRE book's adaptive throttle: local rejections follow the upstream's
//! recent refusals, and stop once it recovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade::throttle::{AdaptiveThrottle, Error, ThrottleLayer};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

use crate::{SEC, answer, get, upstream};

/// Sends `calls` calls 10 ms apart; returns how many were rejected locally
/// and the sum of the rejection probabilities they met.
async fn send<S>(svc: &S, adaptive: &AdaptiveThrottle, calls: usize) -> (usize, f64)
where
    S: tower::Service<
            http::Request<()>,
            Response = http::Response<()>,
            Error = Error<std::convert::Infallible>,
        > + Clone,
{
    let mut rejected = 0;
    let mut expected = 0.0;
    for _ in 0..calls {
        expected += adaptive.rejection_probability();
        match svc.clone().oneshot(get()).await {
            Ok(_) => {}
            Err(Error::Rejected) => rejected += 1,
            Err(e) => panic!("{e}"),
        }
        advance(Duration::from_millis(10)).await;
    }
    (rejected, expected)
}

#[tokio::test(start_paused = true)]
async fn rejections_follow_the_refusals_and_stop_after_recovery() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    // Refuses three calls in four (503 without Retry-After: no pause),
    // until healthy.
    let (up, log) = upstream(move |n| {
        if h.load(Ordering::SeqCst) || n % 4 == 0 {
            answer(200, &[])
        } else {
            answer(503, &[])
        }
    });
    let adaptive = AdaptiveThrottle::new(2.0).unwrap().window(60 * SEC).seed(7);
    let svc = ThrottleLayer::new().adaptive(adaptive.clone()).layer(up);

    // Accepting a quarter, with k = 2: requests outgrow 2 * accepts.
    let (early, _) = send(&svc, &adaptive, 100).await;
    let (late, expected) = send(&svc, &adaptive, 400).await;
    let (requests, accepts) = adaptive.counts();
    assert_eq!(requests, 500, "every attempt counts, rejected or sent");
    assert_eq!(requests as usize - late - early, log.len());
    let p = adaptive.rejection_probability();
    let formula = (requests as f64 - 2.0 * accepts as f64) / (requests as f64 + 1.0);
    assert!((p - formula).abs() < 1e-9);
    assert!(p > 0.5, "the probability rose: {p}");
    assert!(
        late as f64 / 400.0 > early as f64 / 100.0,
        "{early} then {late}"
    );
    // The rejections are those the probabilities predict (seeded: a
    // repeatable run; the bound is four standard deviations anyway).
    let spread = 4.0 * (400.0f64 * 0.25).sqrt();
    assert!(
        (late as f64 - expected).abs() < spread,
        "{late} vs {expected}"
    );

    // Recovered: every sent call is accepted, and the probability falls...
    healthy.store(true, Ordering::SeqCst);
    send(&svc, &adaptive, 300).await;
    assert!(adaptive.rejection_probability() < p, "it fell");
    // ...to nothing once the refusals leave the window.
    advance(60 * SEC).await;
    assert_eq!(adaptive.rejection_probability(), 0.0);
    let (rejected, _) = send(&svc, &adaptive, 100).await;
    assert_eq!(rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn errors_count_as_refusals_and_the_seed_repeats_a_run() {
    async fn run(seed: u64) -> Vec<bool> {
        let adaptive = AdaptiveThrottle::default().seed(seed);
        let svc = ThrottleLayer::new()
            .adaptive(adaptive)
            .layer(tower::service_fn(|_: http::Request<()>| async {
                Err::<http::Response<()>, _>("connection reset")
            }));
        let mut out = Vec::new();
        for _ in 0..50 {
            out.push(matches!(
                svc.clone().oneshot(get()).await,
                Err(Error::Rejected)
            ));
        }
        out
    }
    let a = run(3).await;
    assert_eq!(a, run(3).await);
    assert!(
        a.iter().filter(|&&r| r).count() > 25,
        "failing calls are rejected"
    );
    assert!(!a[0], "nothing is rejected before anything failed");
}
