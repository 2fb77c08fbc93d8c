//! Half-open probes: exactly N admitted, closing, reopening, dropped and
//! stuck probes.

use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Config, State};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

use crate::{Req, SEC, nz};

type Mock = mock::Mock<Req, &'static str>;
type MockHandle = mock::Handle<Req, &'static str>;

/// A breaker around a mock that opened on one failure, with its wait over.
async fn half_open(
    config: Config,
) -> (
    CircuitBreaker<Mock, palisade::circuit_breaker::ErrorIsFailure>,
    MockHandle,
) {
    let (inner, mut backend) = mock::pair::<Req, &'static str>();
    let mut svc = CircuitBreakerLayer::new(config.consecutive_failures(nz(1)).open_wait(30 * SEC))
        .layer(inner);
    let call = svc.ready().await.unwrap().call(Req::Fail);
    next(&mut backend).await.1.send_error("boom");
    assert!(call.await.is_err());
    assert_eq!(svc.handle().state(), State::Open);
    advance(30 * SEC).await;
    (svc, backend)
}

/// The next request reaching the backend; fails (instead of hanging) when
/// none arrives.
async fn next(backend: &mut MockHandle) -> (Req, mock::SendResponse<&'static str>) {
    tokio::time::timeout(3600 * SEC, backend.next_request())
        .await
        .expect("no call reached the backend")
        .expect("the service was dropped")
}

fn is_open_rejection<T: std::fmt::Debug>(
    res: Result<T, palisade::circuit_breaker::Error<palisade::BoxError>>,
) -> bool {
    matches!(res, Err(palisade::circuit_breaker::Error::Open { .. }))
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes_and_closes_when_all_succeed() {
    let (mut svc, mut backend) = half_open(Config::new().half_open_probes(nz(2))).await;
    let handle = svc.handle();
    let first = svc.ready().await.unwrap().call(Req::Ok);
    assert_eq!(handle.state(), State::HalfOpen);
    let second = svc.ready().await.unwrap().call(Req::Ok);
    for _ in 0..5 {
        let third = svc.ready().await.unwrap().call(Req::Ok);
        assert!(
            is_open_rejection(third.await),
            "a third probe was let through"
        );
    }
    let (_, reply1) = next(&mut backend).await;
    let (_, reply2) = next(&mut backend).await;
    assert!(
        backend.poll_request().is_pending(),
        "only two calls reached the backend"
    );

    reply1.send_response("ok");
    assert_eq!(first.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::HalfOpen, "one success of two");
    reply2.send_response("ok");
    assert_eq!(second.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_again() {
    let (mut svc, mut backend) = half_open(Config::default()).await;
    let probe = svc.ready().await.unwrap().call(Req::Fail);
    next(&mut backend).await.1.send_error("boom");
    assert!(matches!(
        probe.await,
        Err(palisade::circuit_breaker::Error::Inner(_))
    ));
    assert_eq!(svc.handle().state(), State::Open);
    let rejected = svc.ready().await.unwrap().call(Req::Ok).await;
    assert!(
        matches!(rejected, Err(palisade::circuit_breaker::Error::Open { retry_after }) if retry_after == 30 * SEC)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_permit_back_without_counting_as_success() {
    let (mut svc, mut backend) = half_open(Config::default()).await;
    let handle = svc.handle();
    let probe = svc.ready().await.unwrap().call(Req::Ok);
    let (_, reply) = next(&mut backend).await;
    assert!(is_open_rejection(
        svc.ready().await.unwrap().call(Req::Ok).await
    ));
    drop(probe);
    reply.send_response("ok"); // too late: nobody is listening
    assert_eq!(
        handle.state(),
        State::HalfOpen,
        "a dropped probe is no success"
    );

    // The permit is back: the next call is a probe and reaches the backend.
    let probe = svc.ready().await.unwrap().call(Req::Ok);
    next(&mut backend).await.1.send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_permit_taken_by_poll_ready_comes_back_when_the_service_is_dropped() {
    let (svc, mut backend) = half_open(Config::default()).await;
    let handle = svc.handle();
    let mut holder = svc.clone();
    holder.ready().await.unwrap(); // takes the only permit
    let mut other = svc.clone();
    assert!(is_open_rejection(
        other.ready().await.unwrap().call(Req::Ok).await
    ));
    drop(holder);
    let probe = other.ready().await.unwrap().call(Req::Ok);
    next(&mut backend).await.1.send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_probe_loses_its_permit_after_the_probe_time_limit() {
    let (mut svc, mut backend) = half_open(Config::new().probe_timeout(5 * SEC)).await;
    let handle = svc.handle();
    let stuck = svc.ready().await.unwrap().call(Req::Ok);
    let (_, stuck_reply) = next(&mut backend).await;

    advance(5 * SEC - Duration::from_millis(1)).await;
    assert!(is_open_rejection(
        svc.ready().await.unwrap().call(Req::Ok).await
    ));
    advance(Duration::from_millis(1)).await;
    let probe = svc.ready().await.unwrap().call(Req::Ok);
    let (_, reply) = next(&mut backend).await;

    // The stuck probe finishing late counts for nothing.
    stuck_reply.send_response("ok");
    assert_eq!(stuck.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::HalfOpen);
    reply.send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_is_entered_lazily_by_the_next_call() {
    let (mut svc, mut backend) = half_open(Config::default()).await;
    let handle = svc.handle();
    // The wait is over, but nothing runs a timer.
    advance(3600 * SEC).await;
    assert_eq!(handle.state(), State::Open);
    let probe = svc.ready().await.unwrap().call(Req::Ok);
    assert_eq!(handle.state(), State::HalfOpen);
    next(&mut backend).await.1.send_response("ok");
    probe.await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_ignored_probe_gives_its_permit_back() {
    let layer = CircuitBreakerLayer::new(
        Config::new()
            .consecutive_failures(nz(1))
            .open_wait(30 * SEC),
    )
    .classify(
        |result: &Result<&'static str, palisade::BoxError>| match result {
            Ok("not found") => palisade::circuit_breaker::Outcome::Ignored,
            Ok(_) => palisade::circuit_breaker::Outcome::Success,
            Err(_) => palisade::circuit_breaker::Outcome::Failure,
        },
    );
    let (inner, mut backend) = mock::pair::<Req, &'static str>();
    let mut svc = layer.layer(inner);
    let handle = svc.handle();
    let call = svc.ready().await.unwrap().call(Req::Fail);
    next(&mut backend).await.1.send_error("boom");
    assert!(call.await.is_err());
    advance(30 * SEC).await;

    let probe = svc.ready().await.unwrap().call(Req::Ok);
    backend
        .next_request()
        .await
        .unwrap()
        .1
        .send_response("not found");
    assert_eq!(probe.await.unwrap(), "not found");
    assert_eq!(
        handle.state(),
        State::HalfOpen,
        "an ignored probe decides nothing"
    );
    let probe = svc.ready().await.unwrap().call(Req::Ok);
    next(&mut backend).await.1.send_response("ok");
    probe.await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}
