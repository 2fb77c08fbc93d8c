//! Malformed and hostile fields are ignored: never a panic, never a wait
//! longer than the maximum.

use std::time::Duration;

use http::HeaderValue;
use palisade::throttle::{DEFAULT_MAX_WAIT, ThrottleLayer};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::{answer, get, upstream};

const FIELDS: [&str; 7] = [
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
];

/// Sends one call answered with `field: bytes` (and a matching partner
/// field, so the pairs are read), then another; returns how long the second
/// waited.
fn wait_after(status: u16, field: usize, bytes: Vec<u8>) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (up, _) = upstream(move |n| {
            let mut r = answer(
                if n == 0 { status } else { 200 },
                &[("ratelimit-remaining", "5"), ("x-ratelimit-reset", "1")],
            );
            if n == 0
                && let Ok(value) = HeaderValue::from_bytes(&bytes)
            {
                r.headers_mut().insert(FIELDS[field], value);
            }
            r
        });
        let svc = ThrottleLayer::new().layer(up);
        svc.clone().oneshot(get()).await.unwrap();
        let start = Instant::now();
        svc.oneshot(get()).await.unwrap();
        start.elapsed()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_in_any_field_never_panic_nor_hold_calls_past_max_wait(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        field in 0..FIELDS.len(),
        status in prop_oneof![Just(200u16), Just(429), Just(503)],
    ) {
        let waited = wait_after(status, field, bytes);
        prop_assert!(waited <= DEFAULT_MAX_WAIT, "{waited:?}");
    }

    #[test]
    fn malformed_values_on_a_success_hold_nothing(
        text in "[^0-9]{0,24}",
        field in 0..FIELDS.len() - 1,
    ) {
        // No digit at all: no number, so no quota; the call after goes at once.
        prop_assert_eq!(wait_after(200, field, text.into_bytes()), Duration::ZERO);
    }
}

#[test]
fn a_malformed_retry_after_on_a_429_is_the_default_pause() {
    for bad in ["soon", "-5", "1.5", "Thu, 99 Foo 2026"] {
        assert_eq!(
            wait_after(429, 6, bad.as_bytes().to_vec()),
            palisade::throttle::DEFAULT_PAUSE,
            "{bad:?}"
        );
    }
}

/// RFC 8941: a list field sent as several field lines is one list, so a
/// quota spent in the second line holds calls as if it were in the first.
#[tokio::test(start_paused = true)]
async fn a_ratelimit_field_in_several_lines_is_read_whole() {
    let (up, log) = upstream(|n| {
        let mut r = answer(200, &[("ratelimit", "\"burst\";r=50;t=1")]);
        if n == 0 {
            r.headers_mut()
                .append("ratelimit", HeaderValue::from_static("\"daily\";r=0;t=5"));
        }
        r
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    let sent: Vec<Duration> = log.instants().iter().map(|i| *i - start).collect();
    assert_eq!(sent[1], Duration::from_secs(5), "{sent:?}");
}

/// An `X-RateLimit-Reset` given as a Unix time with a fraction (as
/// Discord's) is a Unix time too, not a delay of fifty years.
#[tokio::test(start_paused = true)]
async fn a_fractional_unix_time_reset_is_a_unix_time() {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(4);
    let reset = format!("{}.{:03}", reset.as_secs(), reset.subsec_millis());
    let (up, log) = upstream(move |n| match n {
        0 => answer(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
        ),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().layer(up);
    let start = Instant::now();
    svc.clone().oneshot(get()).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    let waited = log.instants()[1] - start;
    // The real clock moved a little while the reset was read.
    assert!(
        waited > Duration::from_secs(3) && waited <= Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(waited < DEFAULT_MAX_WAIT);
}
