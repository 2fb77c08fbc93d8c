//! The service contracts: readiness passes through, a hedge waits for its
//! own clone to be ready (spending no token meanwhile), clones share the
//! window.

use std::io;

use palisade::attempt::{Budget, ErrorIsRetryable};
use palisade::hedge::{Error, HedgeLayer};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

use crate::{Backend, Job, Plan, layer, nz, setup, warm};

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Job, usize, _>(HedgeLayer::new(ErrorIsRetryable));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let (mut svc, mut handle) =
        mock::spawn_layer::<Job, usize, _>(HedgeLayer::new(ErrorIsRetryable));
    handle.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    let err: Error<palisade::BoxError> = assert_ready_err!(svc.poll_ready());
    assert_eq!(err.to_string(), "connection refused");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_waits_for_readiness_and_spends_nothing_meanwhile() {
    // One call at a time: the hedge's clone is not ready while the first
    // attempt runs.
    let budget = Budget::default();
    let backend = Backend::new();
    let inner = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(backend.service::<Job>(Plan::Ok(10)));
    let svc = layer().budget(budget.clone()).layer(inner);
    warm(&svc, 10).await;
    backend.then([Plan::Ok(50)]);
    assert_eq!(svc.clone().oneshot(Job).await.unwrap(), 10);
    assert_eq!(backend.counts.started(), 11, "the hedge never got a slot");
    assert_eq!(budget.balance(), 10.0, "nor a token");
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_the_window() {
    let layer = layer();
    let handle = layer.handle();
    let (a, _) = setup(&layer);
    let (b, backend_b) = setup(&layer);
    warm(&a, 5).await;
    warm(&a.clone(), 5).await;
    assert_eq!(handle.samples(), 10);
    backend_b.then([Plan::Ok(1000), Plan::Ok(1)]);
    assert_eq!(
        b.oneshot(Job).await.unwrap(),
        1,
        "b hedged on a's latencies"
    );
    let _ = nz(1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_refused_by_the_budget_gives_back_the_readiness_it_took() {
    // Two calls at a time, and a budget of 2.5 tokens of 4: more than half
    // (a hedge is considered), but not after taking one (it is refused).
    let budget = Budget::new(nz(4), 0.5).unwrap();
    let backend = Backend::new();
    let inner = tower::ServiceBuilder::new()
        .concurrency_limit(2)
        .service(backend.service::<Job>(Plan::Ok(10)));
    let svc = layer().budget(budget.clone()).layer(inner);
    warm(&svc, 10).await;
    assert!(budget.withdraw() && !budget.withdraw());
    budget.deposit();
    assert_eq!(budget.balance(), 2.5);

    backend.then([Plan::Ok(1000)]);
    let mut first = svc.clone();
    let mut slow = tokio_test::task::spawn(first.ready().await.unwrap().call(Job));
    assert_pending!(slow.poll());
    // Past the delay: the hedge's clone readies, then the budget refuses.
    tokio::time::advance(crate::ms(20)).await;
    assert_pending!(slow.poll());
    assert_eq!(budget.balance(), 2.5, "refused");
    assert_eq!(backend.counts.started(), 11, "no hedge");
    // One call runs: another caller gets the second slot.
    let mut other = svc.clone();
    let mut ready = tokio_test::task::spawn(other.ready());
    assert!(
        ready.poll().is_ready(),
        "the refused hedge still holds a slot"
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_goes_to_a_service_readied_first() {
    // tower-test's mock panics on a call to a clone that was not readied.
    let (svc, mut handle) = mock::pair::<Job, usize>();
    let svc = layer().layer(svc);
    for n in 0..10 {
        let answer = tokio::spawn(svc.clone().oneshot(Job));
        let (_, respond) = handle.next_request().await.unwrap();
        tokio::time::advance(crate::ms(10)).await;
        respond.send_response(n);
        assert_eq!(answer.await.unwrap().unwrap(), n);
    }
    let answer = tokio::spawn(svc.clone().oneshot(Job));
    let (_, slow) = handle.next_request().await.unwrap();
    // Past the delay: the hedge arrives through a readied clone.
    let (_, fast) = handle.next_request().await.unwrap();
    fast.send_response(99);
    assert_eq!(answer.await.unwrap().unwrap(), 99);
    drop(slow);
}
