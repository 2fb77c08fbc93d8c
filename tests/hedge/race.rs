//! The race: the first answer that is done wins, the others are dropped.

use std::io;

use palisade::attempt::Verdict;
use palisade::hedge::HedgeLayer;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::{Backend, Job, Plan, layer, ms, nz, setup, warm};

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_beaten_by_the_hedge_and_dropped() {
    let layer = layer();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    warm(&svc, 10).await;
    let delay = handle.delay().expect("10 samples");
    assert!(delay >= ms(10) && delay < ms(11), "{delay:?}");
    backend.then([Plan::Ok(1000), Plan::Ok(10)]);
    let before = backend.counts.started();
    let start = Instant::now();
    let answer = svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(answer, before + 1, "the hedge answered");
    assert!(start.elapsed() < ms(1000), "without waiting for the first");
    assert_eq!(backend.counts.started(), before + 2);
    assert_eq!(
        backend.counts.cancelled(),
        1,
        "the first attempt was dropped"
    );
    assert_eq!(backend.counts.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_sends_no_hedge() {
    let layer = layer();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    warm(&svc, 10).await;
    assert!(handle.delay().is_some());
    backend.then([Plan::Ok(2)]);
    let before = backend.counts.started();
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), before + 1, "no hedge");
    assert_eq!(backend.counts.cancelled(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_is_sent_before_the_window_has_min_samples() {
    let layer = layer();
    let handle = layer.handle();
    let (svc, backend) = setup(&layer);
    warm(&svc, 9).await;
    assert_eq!(handle.delay(), None, "9 samples of 10");
    backend.then([Plan::Ok(1000)]);
    let before = backend.counts.started();
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), before + 1, "no hedge");
    assert!(handle.delay().is_some(), "10 samples now");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_waits_for_the_hedge_still_running() {
    let (svc, backend) = setup(&layer());
    warm(&svc, 10).await;
    // The first attempt fails after the hedge was sent, and before the
    // hedge answers.
    backend.then([Plan::Fail(15), Plan::Ok(10)]);
    let before = backend.counts.started();
    let answer = svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(answer, before + 1, "the hedge's answer, not the failure");
    assert_eq!(backend.counts.cancelled(), 0, "both finished");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_with_nothing_running_is_returned_at_once() {
    let (svc, backend) = setup(&layer());
    warm(&svc, 10).await;
    backend.then([Plan::Fail(1)]);
    let before = backend.counts.started();
    let start = Instant::now();
    let err = svc.clone().oneshot(Job).await.unwrap_err().into_inner();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(start.elapsed() < ms(10), "no wait for a hedge");
    assert_eq!(backend.counts.started(), before + 1, "and no hedge");
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_last_failure_is_returned() {
    let (svc, backend) = setup(&layer());
    warm(&svc, 10).await;
    backend.then([Plan::Fail(15), Plan::Fail(20)]);
    let err = svc.clone().oneshot(Job).await.unwrap_err().into_inner();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(backend.counts.started(), 12);
    assert_eq!(backend.counts.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_verdict_does_not_cancel_a_running_hedge() {
    // A refusal on this side (Stop) of the first attempt is no answer while
    // the hedge may still succeed.
    let classify = |r: &Result<usize, io::Error>| match r {
        Ok(_) => Verdict::Done,
        Err(_) => Verdict::Stop,
    };
    let layer = HedgeLayer::new(classify).min_samples(nz(10));
    let backend = Backend::new();
    let svc = layer.layer(backend.service::<Job>(Plan::Ok(10)));
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    backend.then([Plan::Fail(15), Plan::Ok(10)]);
    assert_eq!(svc.clone().oneshot(Job).await.unwrap(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_refused_hedge_never_replaces_the_first_attempts_own_failure() {
    // The first attempt (the 11th call, answering 10) fails in a way worth a
    // retry (think a 503 with its Retry-After); its hedge is refused on this
    // side (think a breaker below). The caller must get the downstream's
    // answer, not the refusal.
    let classify = |r: &Result<usize, io::Error>| match r {
        Ok(10) => Verdict::Retry { after: None },
        Ok(11) | Err(_) => Verdict::Stop,
        Ok(_) => Verdict::Done,
    };
    let layer = HedgeLayer::new(classify).min_samples(nz(10));
    let backend = Backend::new();
    let svc = layer.layer(backend.service::<Job>(Plan::Ok(10)));
    for _ in 0..10 {
        svc.clone().oneshot(Job).await.unwrap();
    }
    backend.then([Plan::Ok(15), Plan::Ok(20)]);
    assert_eq!(svc.clone().oneshot(Job).await.unwrap(), 10);
    assert_eq!(backend.counts.started(), 12, "the hedge was sent");
}

#[tokio::test(start_paused = true)]
async fn hedging_the_hedge_sends_a_second_one_after_another_delay() {
    let layer = layer().max_hedges(2);
    let (svc, backend) = setup(&layer);
    warm(&svc, 10).await;
    backend.then([Plan::Ok(1000), Plan::Ok(1000), Plan::Ok(5)]);
    let start = Instant::now();
    let answer = svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(answer, 12, "the second hedge answered");
    let took = start.elapsed();
    // Two delays of ~10.2 ms (each rounded up to tokio's millisecond), then 5 ms.
    assert!(took >= ms(25) && took < ms(30), "{took:?}");
    assert_eq!(backend.counts.started(), 13);
    assert_eq!(backend.counts.cancelled(), 2, "both slow attempts dropped");
}

#[tokio::test(start_paused = true)]
async fn one_hedge_by_default() {
    let (svc, backend) = setup(&layer());
    warm(&svc, 10).await;
    backend.then([Plan::Ok(1000), Plan::Ok(1000)]);
    let answer = svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(answer, 10, "the first attempt, at last");
    assert_eq!(backend.counts.started(), 12, "one hedge only");
}
