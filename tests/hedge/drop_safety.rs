//! A caller can hang up at any point: every attempt goes with it.

use std::future::Future;
use std::pin::pin;
use std::task::Context;

use futures::task::noop_waker_ref;
use palisade::attempt::Budget;
use tower::{Service, ServiceExt};

use crate::{Job, Plan, layer, ms, nz, setup, warm};

/// Polls `future` `polls` times, a millisecond apart, then drops it; true
/// if it finished first.
async fn poll_then_drop<F: Future>(future: F, polls: usize) -> bool {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(noop_waker_ref());
    for _ in 0..polls {
        if future.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        tokio::time::advance(ms(1)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_at_any_point_cancels_every_attempt() {
    // Tokens enough for every round: dropped requests earn none.
    let budget = Budget::new(nz(1000), 1.0).unwrap();
    // The median of mostly fast latencies: the slow requests dropped below
    // (which count among the slow ones) do not move the delay.
    let layer = layer()
        .percentile(0.5)
        .unwrap()
        .max_hedges(2)
        .budget(budget);
    let (svc, backend) = setup(&layer);
    warm(&svc, 200).await;
    let mut finished = false;
    let mut most = 0;
    for polls in 0..45 {
        // Three slow attempts: the first, a hedge at ~11 ms, another at ~22 ms.
        backend.then([Plan::Ok(40), Plan::Ok(40), Plan::Ok(40)]);
        let before = backend.counts.started();
        finished = poll_then_drop(svc.clone().oneshot(Job), polls).await;
        most = most.max(backend.counts.started() - before);
        assert_eq!(backend.counts.alive(), 0, "after {polls} polls");
        // Plans left unused by an early drop would slow the next round.
        backend.plan.lock().unwrap().clear();
    }
    assert_eq!(most, 3, "some rounds dropped three attempts at once");
    assert!(finished, "the last round ran to the end");
}

#[tokio::test(start_paused = true)]
async fn the_losers_are_dropped_when_the_winner_answers() {
    let (svc, backend) = setup(&layer().max_hedges(2));
    warm(&svc, 10).await;
    backend.then([Plan::Ok(1000), Plan::Ok(1000), Plan::Ok(1)]);
    // Called directly: `oneshot` would drop the response future as it
    // answers.
    let mut ready = svc.clone();
    let mut future = pin!(ready.ready().await.unwrap().call(Job));
    let answer = std::future::poll_fn(|cx| future.as_mut().poll(cx)).await;
    assert_eq!(answer.unwrap(), 12);
    // The future is still alive here: the losers went when it answered.
    assert_eq!(backend.counts.alive(), 0);
    assert_eq!(backend.counts.cancelled(), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_while_a_hedge_waits_for_readiness_frees_every_slot() {
    let backend = crate::Backend::new();
    let inner = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(backend.service::<Job>(Plan::Ok(10)));
    let svc = tower::Layer::layer(&layer(), inner);
    warm(&svc, 10).await;
    backend.then([Plan::Ok(1000)]);
    let mut first = svc.clone();
    let mut slow = tokio_test::task::spawn(first.ready().await.unwrap().call(Job));
    assert!(slow.poll().is_pending());
    // Past the delay: the hedge waits for the slot the first attempt holds.
    tokio::time::advance(ms(20)).await;
    assert!(slow.poll().is_pending());
    drop(slow);
    assert_eq!(backend.counts.alive(), 0);
    let mut other = svc.clone();
    assert!(
        tokio_test::task::spawn(other.ready()).poll().is_ready(),
        "the slot is free again"
    );
}
