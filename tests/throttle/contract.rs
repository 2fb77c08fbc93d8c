//! The tower contracts (readiness, the readied service and its clone) and
//! the HTTP surface of the error.

use std::time::Duration;

use http::{Request, Response};
use palisade::attempt::{Retryable, Verdict};
use palisade::problem::{IntoProblem, types};
use palisade::throttle::{Error, ThrottleLayer};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::Layer;
use tower_test::mock;

use crate::{SEC, answer, get};

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let mut svc = mock::Spawn::new(ThrottleLayer::new().layer(inner));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    handle.send_error("not ready");
    let err = assert_ready_err!(svc.poll_ready());
    assert!(matches!(err, Error::Inner(_)));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_takes_the_readied_service_and_leaves_a_clone() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let mut svc = mock::Spawn::new(ThrottleLayer::new().layer(inner));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut first = task::spawn(svc.call(get()));
    assert_pending!(first.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(429, &[("retry-after", "2")]));
    assert_eq!(assert_ready_ok!(first.poll()).status(), 429);

    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = task::spawn(svc.call(get()));
    assert_pending!(waiting.poll());
    // The mock panics on a call through a service that was not readied:
    // the wait keeps the readied one, and the call below goes through it.
    assert!(handle.poll_request().is_pending(), "nothing sent yet");
    advance(2 * SEC).await;
    assert_pending!(waiting.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(200, &[]));
    assert_eq!(assert_ready_ok!(waiting.poll()).status(), 200);
}

#[test]
fn refusals_are_503_overloaded_problems_with_retry_after_and_stop_retries() {
    let throttled: Error<palisade::problem::Problem> = Error::Throttled {
        retry_after: Duration::from_millis(2500),
    };
    assert_eq!(
        throttled.to_string(),
        "throttled: the upstream allows the next call in 2.5s"
    );
    let problem = throttled.into_problem();
    assert_eq!(problem.status(), 503);
    assert_eq!(problem.type_uri(), types::OVERLOADED);
    assert_eq!(problem.headers()["retry-after"], "3");

    let rejected: Error<palisade::problem::Problem> = Error::Rejected;
    assert_eq!(rejected.to_string(), "rejected by the adaptive throttle");
    let problem = rejected.into_problem();
    assert_eq!(problem.status(), 503);
    assert_eq!(problem.headers()["retry-after"], "1");

    let stop: Error<std::io::Error> = Error::Rejected;
    assert_eq!(stop.verdict(), Verdict::Stop);
    let stop: Error<std::io::Error> = Error::Throttled { retry_after: SEC };
    assert_eq!(stop.verdict(), Verdict::Stop);
    assert!(stop.is_refused());
    let reset: Error<std::io::Error> = Error::Inner(std::io::ErrorKind::ConnectionReset.into());
    assert_eq!(reset.verdict(), Verdict::Retry { after: None });
    assert!(!reset.is_refused());
}

#[tokio::test(start_paused = true)]
async fn a_refused_future_polled_again_panics_rather_than_sends() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let mut svc = mock::Spawn::new(ThrottleLayer::new().layer(inner));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut first = task::spawn(svc.call(get()));
    assert_pending!(first.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(429, &[("retry-after", "9")]));
    assert_ready!(first.poll()).unwrap();
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut req = get();
    palisade::timeout::DeadlineRequest::set_deadline(
        &mut req,
        palisade::timeout::Deadline::after(SEC),
    );
    let mut refused = task::spawn(svc.call(req));
    assert!(matches!(
        assert_ready!(refused.poll()),
        Err(Error::Throttled { .. })
    ));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refused.poll()));
    assert!(again.is_err());
}

/// A call readied, then held by the schedule, asks its inner service again
/// once its turn comes: a circuit breaker below that opened during the wait
/// refuses it, rather than letting it through on the decision it made
/// before the wait.
#[tokio::test(start_paused = true)]
async fn a_waited_call_asks_the_breaker_below_again_after_its_wait() {
    use palisade::circuit_breaker::{CircuitBreakerLayer, Config};
    use tower::{ServiceBuilder, ServiceExt};

    let (up, log) = crate::upstream(|n| match n {
        0 => answer(429, &[("retry-after", "2")]),
        _ => answer(200, &[]),
    });
    let breaker = CircuitBreakerLayer::new(Config::new());
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(ThrottleLayer::new())
        .layer(breaker)
        .service(up);
    svc.clone().oneshot(get()).await.unwrap();
    // Readied while the breaker is closed, then waits 2 s.
    let mut waiting = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(waiting.poll());
    handle.force_open();
    advance(2 * SEC).await;
    let err = assert_ready!(waiting.poll()).unwrap_err();
    assert!(matches!(&err, Error::Inner(e) if e.is_open()), "{err:?}");
    assert_eq!(log.len(), 1, "the open breaker's upstream saw nothing");
}
