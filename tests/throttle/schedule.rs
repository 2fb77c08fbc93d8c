//! The schedule learnt from `429`s, `Retry-After` and the quota fields, and
//! shared by every clone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use palisade::throttle::{DEFAULT_PAUSE, Error, ThrottleLayer};
use palisade::timeout::{Deadline, DeadlineRequest};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{Log, SEC, answer, get, get_within, upstream};

/// The test upstream of the issue: a fixed window of `quota` calls per
/// `window`, which answers `429` with `Retry-After` (whole seconds, rounded
/// up) and `RateLimit` once the quota is spent, and counts the requests
/// that reached it while it had asked to be left alone.
#[derive(Clone)]
struct Limited {
    state: Arc<Mutex<LimitedState>>,
    log: Log,
}

struct LimitedState {
    quota: u32,
    window: Duration,
    window_start: Instant,
    used: u32,
    /// No request was to come before this, once it refused one.
    quiet_until: Option<Instant>,
    refusals: u32,
    early: u32,
}

impl Limited {
    fn new(quota: u32, window: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(LimitedState {
                quota,
                window,
                window_start: Instant::now(),
                used: 0,
                quiet_until: None,
                refusals: 0,
                early: 0,
            })),
            log: Log::default(),
        }
    }

    fn answer(&self) -> Response<()> {
        let now = Instant::now();
        self.log.0.lock().unwrap().push(now);
        let mut s = self.state.lock().unwrap();
        if s.quiet_until.is_some_and(|q| now < q) {
            s.early += 1;
        }
        while now >= s.window_start + s.window {
            let next = s.window_start + s.window;
            s.window_start = next;
            s.used = 0;
        }
        let reset = s.window_start + s.window - now;
        let reset_secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        if s.used == s.quota {
            s.refusals += 1;
            s.quiet_until = Some(now + Duration::from_secs(reset_secs));
            return answer(
                429,
                &[
                    ("retry-after", &reset_secs.to_string()),
                    ("ratelimit", &format!("\"default\";r=0;t={reset_secs}")),
                    (
                        "ratelimit-policy",
                        &format!("\"default\";q={};w={}", s.quota, s.window.as_secs()),
                    ),
                ],
            );
        }
        s.used += 1;
        answer(200, &[])
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |_req: Request<()>| {
            let response = this.answer();
            async move { Ok(response) }
        })
    }
}

/// The test: four callers, each sending three calls in a row with a
/// 25 s deadline each, against an upstream that allows 3 calls per 10 s and
/// says so only when it refuses one.
#[tokio::test(start_paused = true)]
async fn after_the_first_refusal_nothing_reaches_the_upstream_before_it_allows() {
    let upstream = Limited::new(3, 10 * SEC);
    let layer = ThrottleLayer::new();
    let deadline = 25 * SEC;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let svc = layer.layer(upstream.service());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let called = Instant::now();
                let response = svc.clone().oneshot(get_within(deadline)).await.unwrap();
                let took = called.elapsed();
                assert!(took < deadline, "a call took {took:?}");
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let s = upstream.state.lock().unwrap();
    assert_eq!(s.early, 0, "no request before the upstream allowed one");
    assert_eq!(
        s.refusals, 1,
        "only the call that taught the limit was refused"
    );
    assert_eq!(statuses.iter().filter(|&&st| st == 200).count(), 11);
    // Three per window, spread 10/3 s apart from the reset on (each timer
    // fires on the next whole millisecond).
    let millis = upstream.log.millis_since(start);
    assert_eq!(&millis[..4], [0, 0, 0, 0]);
    assert_eq!(millis[4], 10000);
    for pair in millis[4..].windows(2) {
        assert!((3334..=3335).contains(&(pair[1] - pair[0])), "{millis:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_in_seconds_holds_every_call_until_then() {
    let (up, log) = upstream(|n| match n {
        0 => answer(429, &[("retry-after", "3")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(get()).await.unwrap().status(), 429);
    let (a, b) = tokio::join!(svc.clone().oneshot(get()), svc.clone().oneshot(get()));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(log.millis_since(start), [0, 3000, 3000]);
}

#[tokio::test(start_paused = true)]
async fn an_http_date_retry_after_holds_calls_until_that_date() {
    // HTTP dates have whole seconds: five seconds from now, rounded down.
    let date = httpdate::fmt_http_date(SystemTime::now() + 5 * SEC);
    let (up, log) = upstream(move |n| match n {
        0 => answer(503, &[("retry-after", &date)]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(get()).await.unwrap().status(), 503);
    svc.oneshot(get()).await.unwrap();
    let second = log.instants()[1] - start;
    assert!(second > 4 * SEC && second <= 5 * SEC, "{second:?}");
}

#[tokio::test(start_paused = true)]
async fn no_quota_left_blocks_until_the_reset() {
    let (up, log) = upstream(|n| match n {
        0 => answer(200, &[("ratelimit", "\"default\";r=0;t=5")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    let mut next = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(next.poll());
    advance(5 * SEC - Duration::from_millis(1)).await;
    assert_pending!(next.poll());
    assert_eq!(log.len(), 1, "nothing sent before the reset");
    advance(Duration::from_millis(1)).await;
    assert!(assert_ready!(next.poll()).is_ok());
    assert_eq!(log.millis_since(start), [0, 5000]);
}

#[tokio::test(start_paused = true)]
async fn a_small_quota_spreads_the_calls_until_the_reset() {
    // Two left for the next 10 s: one every 5 s, then the pace lapses with
    // the window.
    let (up, log) = upstream(|n| match n {
        0 => answer(200, &[("ratelimit", "\"default\";r=2;t=10")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    let calls = (0..4).map(|_| svc.clone().oneshot(get()));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(log.millis_since(start), [0, 5000, 10000, 10000, 10000]);
}

#[tokio::test(start_paused = true)]
async fn a_hostile_reset_paces_the_calls_left_not_every_call_for_decades() {
    // One call left for 31 years, then the fields stop: the one call waits
    // the maximum wait (the slowest pace), and the pace ends with it.
    let (up, log) = upstream(|n| match n {
        0 => answer(200, &[("ratelimit", "\"default\";r=1;t=999999999")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().max_wait(10 * SEC).layer(up);
    let start = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(log.millis_since(start), [0, 10000, 10000]);
}

#[tokio::test(start_paused = true)]
async fn the_latest_quota_sets_the_pace() {
    let (up, log) = upstream(|n| match n {
        0 => answer(200, &[("ratelimit", "\"default\";r=1;t=4")]),
        1 => answer(200, &[("ratelimit", "\"default\";r=10;t=60")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    // 4 s for one call left; then 60 s for ten: 6 s apart.
    assert_eq!(log.millis_since(start), [0, 4000, 10000]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_is_refused_at_once_and_nothing_is_sent() {
    let (up, log) = upstream(|_| answer(429, &[("retry-after", "10")]));
    let svc = ThrottleLayer::new().layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    let start = Instant::now();
    let err = svc.clone().oneshot(get_within(5 * SEC)).await.unwrap_err();
    assert!(matches!(err, Error::Throttled { retry_after } if retry_after == 10 * SEC));
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    // A deadline that falls exactly at the reset leaves no time to answer.
    let err = svc.clone().oneshot(get_within(10 * SEC)).await.unwrap_err();
    assert!(matches!(err, Error::Throttled { .. }));
    assert_eq!(log.len(), 1, "nothing reached the upstream");
    // One that fits waits.
    svc.oneshot(get_within(11 * SEC)).await.unwrap();
    assert_eq!(start.elapsed(), 10 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_deadline_no_longer_fits_leaves_when_the_schedule_moves() {
    let (up, log) = upstream(|n| match n {
        0 => answer(429, &[("retry-after", "2")]),
        _ => answer(200, &[]),
    });
    let (slow_tx, slow_rx) = tokio::sync::oneshot::channel::<()>();
    let slow_rx = Arc::new(Mutex::new(Some(slow_rx)));
    // A second upstream, behind the same layer, whose answer comes later
    // and asks for a longer pause.
    let slow = service_fn(move |_req: Request<()>| {
        let rx = slow_rx.lock().unwrap().take().unwrap();
        async move {
            rx.await.unwrap();
            Ok::<_, std::convert::Infallible>(answer(429, &[("retry-after", "60")]))
        }
    });
    let layer = ThrottleLayer::new();
    let svc = layer.layer(up);
    let mut in_flight = task::spawn(layer.layer(slow).oneshot(get()));
    assert_pending!(in_flight.poll());
    svc.clone().oneshot(get()).await.unwrap();
    let mut waiter = task::spawn(svc.clone().oneshot(get_within(5 * SEC)));
    assert_pending!(waiter.poll());
    slow_tx.send(()).unwrap();
    assert!(assert_ready!(in_flight.poll()).is_ok());
    assert!(waiter.is_woken());
    let err = assert_ready!(waiter.poll()).unwrap_err();
    assert!(
        matches!(err, Error::Throttled { retry_after } if retry_after == 30 * SEC),
        "{err:?}"
    );
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_wait_caps_a_hostile_retry_after() {
    let ten_years = (10 * 365 * 86_400u64).to_string();
    let (up, log) = upstream(move |n| match n {
        0 => answer(429, &[("retry-after", &ten_years)]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().max_wait(20 * SEC).layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    // The pause is 20 s, not ten years: a call without a deadline waits it.
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(log.millis_since(start), [0, 20_000]);

    let (up, _) = upstream(|_| answer(429, &[("retry-after", "99999999999999999999")]));
    let svc = ThrottleLayer::new().layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    let start = Instant::now();
    svc.oneshot(get()).await.unwrap();
    assert_eq!(start.elapsed(), palisade::throttle::DEFAULT_MAX_WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_wait_is_refused_at_once() {
    // Blocked for 4 s, then one call per 4 s: the second waiter's turn, at
    // 8 s, is past the 6 s maximum wait.
    let (up, log) = upstream(|n| match n {
        0 => answer(
            429,
            &[
                ("retry-after", "4"),
                ("ratelimit", "\"default\";r=0;t=4"),
                ("ratelimit-policy", "\"default\";q=1;w=4"),
            ],
        ),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().max_wait(6 * SEC).layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    let start = Instant::now();
    let (first, second) = tokio::join!(svc.clone().oneshot(get()), svc.clone().oneshot(get()));
    assert!(first.is_ok());
    assert!(matches!(second, Err(Error::Throttled { retry_after }) if retry_after == 8 * SEC));
    assert_eq!(log.len(), 2);
    assert_eq!(start.elapsed(), 4 * SEC);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_pauses_doubling_until_an_answer() {
    let (up, log) = upstream(|n| match n {
        0..=2 => answer(429, &[]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    for _ in 0..5 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    // Pauses of 1, 2 and 4 s, then the answer at 7 s resets the pause.
    assert_eq!(DEFAULT_PAUSE, SEC);
    assert_eq!(log.millis_since(start), [0, 1000, 3000, 7000, 7000]);
}

#[tokio::test(start_paused = true)]
async fn clones_of_the_layer_and_of_its_services_share_the_schedule() {
    let (a, log_a) = upstream(|_| answer(429, &[("retry-after", "3")]));
    let (b, log_b) = upstream(|_| answer(200, &[]));
    let layer = ThrottleLayer::new();
    let svc_a = layer.layer(a);
    let svc_b = layer.clone().layer(b);
    let start = Instant::now();
    svc_a.clone().oneshot(get()).await.unwrap();
    svc_b.clone().oneshot(get()).await.unwrap();
    assert_eq!(log_a.millis_since(start), [0]);
    assert_eq!(log_b.millis_since(start), [3000]);
    // Another layer keeps its own schedule.
    let (c, log_c) = upstream(|_| answer(200, &[]));
    ThrottleLayer::new().layer(c).oneshot(get()).await.unwrap();
    assert_eq!(log_c.millis_since(start), [3000]);
}

#[tokio::test(start_paused = true)]
async fn callers_wait_out_a_retry_after_then_go_at_the_policy_pace() {
    // The refusal says: none left for 5 s, and one call per 2 s after that.
    let (up, log) = upstream(|n| match n {
        0 => answer(
            429,
            &[
                ("retry-after", "5"),
                ("ratelimit", "\"default\";r=0;t=5"),
                ("ratelimit-policy", "\"default\";q=1;w=2"),
            ],
        ),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    let calls = (0..4).map(|_| svc.clone().oneshot(get()));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(log.millis_since(start), [0, 5000, 7000, 9000, 11000]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_place_back() {
    let (up, log) = upstream(|n| match n {
        0 => answer(200, &[("ratelimit", "\"default\";r=2;t=10")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    // First in line (due at 5 s), then second (due at 10 s).
    let mut first = task::spawn(svc.clone().oneshot(get()));
    let mut second = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(first.poll());
    assert_pending!(second.poll());
    advance(2 * SEC).await;
    drop(first);
    // The second takes the first's place: it goes at 5 s, not 10 s.
    assert!(second.is_woken());
    assert_pending!(second.poll());
    advance(3 * SEC).await;
    assert!(assert_ready!(second.poll()).is_ok());
    assert_eq!(log.millis_since(start), [0, 5000]);

    // A waiter dropped at the back leaves nothing behind either: the next
    // call goes at the next slot, 10 s.
    let mut third = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(third.poll());
    drop(third);
    advance(5 * SEC).await;
    let mut fourth = task::spawn(svc.clone().oneshot(get()));
    assert!(assert_ready!(fourth.poll()).is_ok());
    assert_eq!(log.millis_since(start), [0, 5000, 10000]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_carried_by_the_request_is_read() {
    let (up, _) = upstream(|_| answer(429, &[("retry-after", "2")]));
    let svc = ThrottleLayer::new().layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    let mut req = get();
    req.set_deadline(Deadline::at(Instant::now() + SEC));
    assert!(matches!(
        svc.oneshot(req).await,
        Err(Error::Throttled { retry_after }) if retry_after == 2 * SEC
    ));
}

#[tokio::test(start_paused = true)]
async fn refusals_of_calls_sent_before_a_pause_do_not_lengthen_it() {
    let log = Log::default();
    let l = log.clone();
    // Answers after 100 ms: the first two calls are both in flight when
    // the first refusal arrives.
    let up = service_fn(move |_req: Request<()>| {
        let n = {
            let mut instants = l.0.lock().unwrap();
            instants.push(Instant::now());
            instants.len()
        };
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = if n <= 2 { 429 } else { 200 };
            Ok::<_, std::convert::Infallible>(answer(status, &[]))
        }
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    let (a, b) = tokio::join!(svc.clone().oneshot(get()), svc.clone().oneshot(get()));
    assert_eq!(a.unwrap().status(), 429);
    assert_eq!(b.unwrap().status(), 429);
    svc.oneshot(get()).await.unwrap();
    // One pause of 1 s from the first refusal, at 100 ms; not doubled by
    // the second, which was old news.
    assert_eq!(log.millis_since(start), [0, 0, 1100]);
}

#[tokio::test(start_paused = true)]
async fn durations_too_large_saturate_instead_of_panicking() {
    let (up, log) = upstream(|_| {
        answer(
            429,
            &[
                ("ratelimit", "\"d\";r=0;t=999999999"),
                ("ratelimit-policy", "\"d\";q=1;w=999999999"),
            ],
        )
    });
    let svc = ThrottleLayer::new()
        .max_wait(Duration::MAX)
        .pause(Duration::MAX)
        .layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    let err = svc.oneshot(get_within(SEC)).await.unwrap_err();
    assert!(matches!(err, Error::Throttled { retry_after } if retry_after > 999_999 * SEC));
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_pushback_holds_calls_like_a_retry_after() {
    let (up, log) = upstream(|n| match n {
        0 => answer(
            200,
            &[("grpc-status", "8"), ("grpc-retry-pushback-ms", "1500")],
        ),
        _ => answer(200, &[("grpc-status", "0")]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    assert_eq!(log.millis_since(start), [0, 1500]);
}

/// A call first in line whose future is held but no longer polled (a
/// `select!` that took another branch and keeps it) does not hold the calls
/// behind it past their own bounds: each leaves, refused, by its deadline
/// or the maximum wait.
#[tokio::test(start_paused = true)]
async fn a_stalled_first_waiter_holds_no_call_past_its_bounds() {
    let (up, log) = upstream(|n| match n {
        0 => answer(429, &[("retry-after", "2")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().max_wait(5 * SEC).layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    // First in line, then never polled again.
    let mut stalled = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(stalled.poll());
    let mut by_deadline = task::spawn(svc.clone().oneshot(get_within(3 * SEC)));
    let mut by_max_wait = task::spawn(svc.clone().oneshot(get()));
    assert_pending!(by_deadline.poll());
    assert_pending!(by_max_wait.poll());

    advance(3 * SEC).await;
    assert!(by_deadline.is_woken(), "woken at its deadline");
    let err = assert_ready!(by_deadline.poll()).unwrap_err();
    assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
    assert_pending!(by_max_wait.poll());

    advance(2 * SEC + Duration::from_millis(1)).await;
    assert!(by_max_wait.is_woken(), "woken past its maximum wait");
    let err = assert_ready!(by_max_wait.poll()).unwrap_err();
    assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
    assert_eq!(log.len(), 1, "nothing sent behind the stalled call");
    drop(stalled);
}

/// A `429` without `Retry-After` whose quota field says when the quota is
/// back says when: calls wait for that reset, not for a pause that doubles
/// with each such `429` (1, 2, 4 s...).
#[tokio::test(start_paused = true)]
async fn a_429_whose_spent_quota_says_when_waits_for_its_reset_not_a_doubling_pause() {
    let (up, log) = upstream(|n| match n {
        0..=2 => answer(429, &[("ratelimit", "\"default\";r=0;t=2")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    for _ in 0..4 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(log.millis_since(start), [0, 2000, 4000, 6000]);
}

/// A `429` whose spent quota is back at once (`t=0`) says nothing usable:
/// it pauses as a `429` that says nothing, rather than letting every call
/// through to be refused again.
#[tokio::test(start_paused = true)]
async fn a_429_whose_spent_quota_resets_at_once_still_pauses() {
    let (up, log) = upstream(|n| match n {
        0 => answer(429, &[("ratelimit", "\"default\";r=0;t=0")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    assert_eq!(log.millis_since(start), [0, DEFAULT_PAUSE.as_millis()]);
}
