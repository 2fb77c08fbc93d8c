//! Each algorithm on hand-made samples.

use std::time::Duration;

use palisade::adaptive_concurrency::{Aimd, Algorithm, Gradient2, Sample};
use palisade::load_shed::ConfigError;

const MS: Duration = Duration::from_millis(1);

/// Feeds `n` samples of `latency` with `in_flight`, one `latency` apart
/// from `*now`, and returns the last limit.
fn feed(
    algorithm: &mut impl Algorithm,
    now: &mut Duration,
    n: usize,
    latency: Duration,
    in_flight: u32,
    dropped: bool,
) -> u32 {
    let mut limit = 0;
    for _ in 0..n {
        *now += latency;
        limit = algorithm.update(Sample::new(latency, in_flight, dropped), *now);
    }
    limit
}

#[test]
fn aimd_backs_off_on_a_drop_and_on_a_slow_answer() {
    let mut aimd = Aimd::new()
        .bounds(1, 20, 100)
        .unwrap()
        .latency_threshold(50 * MS);
    assert_eq!(aimd.initial_limit(), 20);
    assert_eq!(aimd.update(Sample::new(10 * MS, 20, true), 100 * MS), 18);
    // Admitted after the first backoff, and slower than the threshold.
    assert_eq!(aimd.update(Sample::new(60 * MS, 18, false), 200 * MS), 16);
}

#[test]
fn aimd_backs_off_once_for_requests_admitted_under_the_old_limit() {
    let mut aimd = Aimd::new().bounds(1, 20, 100).unwrap();
    assert_eq!(aimd.update(Sample::new(10 * MS, 20, true), 100 * MS), 18);
    // Admitted at 95 ms, before the backoff at 100 ms: no news.
    assert_eq!(aimd.update(Sample::new(10 * MS, 20, true), 105 * MS), 18);
    // Admitted at 100 ms: a new drop.
    assert_eq!(aimd.update(Sample::new(10 * MS, 18, true), 110 * MS), 16);
}

#[test]
fn aimd_grows_only_while_the_limit_is_used() {
    let mut aimd = Aimd::new().bounds(1, 20, 100).unwrap();
    let mut now = Duration::ZERO;
    // Nine in flight of twenty: the limit is not what holds them back.
    assert_eq!(feed(&mut aimd, &mut now, 1_000, 10 * MS, 9, false), 20);
    // Half of it used: about one more permit per limit's worth of samples.
    assert_eq!(feed(&mut aimd, &mut now, 20, 10 * MS, 20, false), 20);
    assert_eq!(feed(&mut aimd, &mut now, 2, 10 * MS, 20, false), 21);
    assert_eq!(feed(&mut aimd, &mut now, 21, 10 * MS, 21, false), 22);
}

#[test]
fn aimd_stays_within_its_bounds() {
    let mut aimd = Aimd::new().bounds(4, 8, 12).unwrap();
    let mut now = Duration::ZERO;
    assert_eq!(feed(&mut aimd, &mut now, 100, 10 * MS, 12, true), 4);
    assert_eq!(feed(&mut aimd, &mut now, 10_000, 10 * MS, 12, false), 12);
}

/// Feeds Gradient2 `n` windows (one limit's worth of samples, at least
/// 10) of `latency`, with `in_flight` or else the limit in flight (used),
/// and returns the last limit.
fn windows(
    gradient: &mut Gradient2,
    now: &mut Duration,
    n: usize,
    latency: Duration,
    in_flight: Option<u32>,
) -> u32 {
    let mut limit = gradient.initial_limit();
    for _ in 0..n {
        let size = limit.max(10) as usize;
        limit = feed(
            gradient,
            now,
            size,
            latency,
            in_flight.unwrap_or(limit),
            false,
        );
    }
    limit
}

#[test]
fn gradient2_changes_the_limit_once_per_window() {
    let mut gradient = Gradient2::new().bounds(1, 20, 1_000).unwrap();
    let mut now = Duration::ZERO;
    assert_eq!(feed(&mut gradient, &mut now, 19, 10 * MS, 20, false), 20);
    // The 20th sample closes the window: 20 + 0.2 * sqrt(20).
    assert_eq!(feed(&mut gradient, &mut now, 1, 10 * MS, 20, false), 20);
    assert_eq!(feed(&mut gradient, &mut now, 20, 10 * MS, 20, false), 21);
}

#[test]
fn gradient2_grows_at_the_usual_latency_and_shrinks_when_it_rises() {
    let mut gradient = Gradient2::new().bounds(1, 20, 1_000).unwrap();
    let mut now = Duration::ZERO;
    let grown = windows(&mut gradient, &mut now, 40, 10 * MS, None);
    assert!(grown > 60, "grew to {grown}");
    // Three times slower than the long-term RTT: well past the tolerance.
    let limit = windows(&mut gradient, &mut now, 5, 30 * MS, None);
    assert!(limit < grown * 3 / 4, "shrank from {grown} to {limit}");
    // 1.4 times slower: within the tolerance, it grows again.
    let regrown = windows(&mut gradient, &mut now, 5, 14 * MS, None);
    assert!(regrown > limit, "{limit} to {regrown}");
}

#[test]
fn gradient2_does_not_grow_while_the_limit_is_unused() {
    let mut gradient = Gradient2::new().bounds(1, 20, 1_000).unwrap();
    let mut now = Duration::ZERO;
    assert_eq!(windows(&mut gradient, &mut now, 50, 10 * MS, Some(9)), 20);
    // Unused, and slower: it still shrinks.
    assert!(windows(&mut gradient, &mut now, 5, 40 * MS, Some(9)) < 20);
}

#[test]
fn gradient2_learns_from_latency_not_drops() {
    let mut gradient = Gradient2::new().bounds(1, 20, 1_000).unwrap();
    let mut now = Duration::ZERO;
    assert!(feed(&mut gradient, &mut now, 100, 10 * MS, 20, true) > 20);
}

#[test]
fn gradient2_relearns_a_slower_service_once_at_its_minimum() {
    let mut gradient = Gradient2::new().bounds(2, 20, 1_000).unwrap();
    let mut now = Duration::ZERO;
    windows(&mut gradient, &mut now, 40, 10 * MS, None);
    // Three times slower for good, whatever the limit: down to the minimum,
    // where the new latency is learnt, then up again.
    let mut lowest = u32::MAX;
    let mut limit = 0;
    for _ in 0..100 {
        limit = windows(&mut gradient, &mut now, 1, 30 * MS, None);
        lowest = lowest.min(limit);
    }
    assert_eq!(lowest, 2);
    assert!(limit > 20, "back to {limit}");
}

#[test]
fn gradient2_stays_within_its_bounds() {
    let mut gradient = Gradient2::new().bounds(5, 10, 50).unwrap();
    let mut now = Duration::ZERO;
    assert_eq!(windows(&mut gradient, &mut now, 200, 10 * MS, None), 50);
    let mut latency = 10 * MS;
    let mut limit = 50;
    // Ever slower: the long-term RTT never catches up.
    for _ in 0..100 {
        latency = latency.mul_f64(1.1);
        limit = windows(&mut gradient, &mut now, 1, latency, None);
    }
    assert_eq!(limit, 5);
}

#[test]
fn bad_settings_are_refused_with_what_is_wrong() {
    for (min, initial, max) in [(0, 1, 1), (5, 4, 10), (1, 11, 10)] {
        let expected = ConfigError::LimitBounds { min, initial, max };
        assert_eq!(Aimd::new().bounds(min, initial, max).unwrap_err(), expected);
        assert_eq!(
            Gradient2::new().bounds(min, initial, max).unwrap_err(),
            expected
        );
    }
    assert_eq!(
        Aimd::new().bounds(0, 0, 10).unwrap_err().to_string(),
        "limit bounds 0..=10 must be non-empty and hold the initial limit 0"
    );
    for ratio in [1.0, 0.4, f64::NAN, -0.9] {
        assert!(matches!(
            Aimd::new().backoff(ratio),
            Err(ConfigError::OutOfRange {
                name: "backoff",
                ..
            })
        ));
    }
    assert_eq!(
        Aimd::new().backoff(1.0).unwrap_err().to_string(),
        "backoff must be in [0.5, 1), got 1"
    );
    for smoothing in [0.0, 1.5, f64::INFINITY] {
        assert!(matches!(
            Gradient2::new().smoothing(smoothing),
            Err(ConfigError::OutOfRange {
                name: "smoothing",
                ..
            })
        ));
    }
    for tolerance in [0.9, f64::NAN] {
        assert!(matches!(
            Gradient2::new().tolerance(tolerance),
            Err(ConfigError::OutOfRange {
                name: "tolerance",
                ..
            })
        ));
    }
    assert!(Aimd::new().bounds(1, 1, 1).unwrap().backoff(0.5).is_ok());
    assert!(
        Gradient2::new()
            .smoothing(1.0)
            .unwrap()
            .tolerance(1.0)
            .is_ok()
    );
}
