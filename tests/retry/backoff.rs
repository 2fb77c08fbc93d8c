//! The backoff's waits: bounds with a seeded jitter, saturation.

use std::time::Duration;

use palisade::retry::{Backoff, Jitter};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn seeded_full_jitter_stays_under_the_doubling_ceiling() {
    let backoff = Backoff::exponential(10 * MS, 1000 * MS).unwrap().seed(42);
    let waits: Vec<Duration> = backoff.delays().take(12).collect();
    for (n, wait) in waits.iter().enumerate() {
        let ceiling = (10 * MS * 2u32.pow(n as u32)).min(1000 * MS);
        assert!(*wait <= ceiling, "retry {n}: {wait:?} > {ceiling:?}");
    }
    assert_eq!(
        waits,
        backoff.delays().take(12).collect::<Vec<_>>(),
        "a seed repeats"
    );
    let other: Vec<Duration> = backoff.seed(43).delays().take(12).collect();
    assert_ne!(waits, other, "another seed, other waits");
    assert!(
        waits.iter().collect::<std::collections::HashSet<_>>().len() > 6,
        "jittered: {waits:?}"
    );
}

#[test]
fn seeded_decorrelated_jitter_stays_between_base_and_max() {
    let backoff = Backoff::exponential(10 * MS, 500 * MS)
        .unwrap()
        .jitter(Jitter::Decorrelated)
        .seed(7);
    let mut previous = 10 * MS;
    for wait in backoff.delays().take(50) {
        assert!(wait >= 10 * MS && wait <= 500 * MS, "{wait:?}");
        assert!(wait <= previous * 3, "{wait:?} after {previous:?}");
        previous = wait;
    }
}

#[test]
fn no_jitter_doubles_up_to_max_and_stays_there() {
    let backoff = Backoff::exponential(MS, 5 * MS)
        .unwrap()
        .jitter(Jitter::None);
    let waits: Vec<Duration> = backoff.delays().take(200).collect();
    assert_eq!(&waits[..4], &[MS, 2 * MS, 4 * MS, 5 * MS]);
    assert!(waits[4..].iter().all(|w| *w == 5 * MS));
}

#[test]
fn durations_near_max_saturate() {
    for jitter in [Jitter::Full, Jitter::Decorrelated, Jitter::None] {
        let backoff = Backoff::exponential(Duration::MAX / 2, Duration::MAX)
            .unwrap()
            .jitter(jitter)
            .seed(1);
        for wait in backoff.delays().take(100) {
            assert!(wait <= Duration::MAX);
        }
        let huge = Backoff::exponential(Duration::MAX, Duration::MAX)
            .unwrap()
            .jitter(jitter);
        assert!(huge.delays().take(100).all(|w| w <= Duration::MAX));
    }
    let none = Backoff::exponential(Duration::MAX / 2, Duration::MAX)
        .unwrap()
        .jitter(Jitter::None);
    assert_eq!(none.delays().nth(3), Some(Duration::MAX));
}

#[test]
fn refuses_a_zero_base_or_a_max_below_base() {
    assert!(Backoff::exponential(Duration::ZERO, MS).is_err());
    let err = Backoff::exponential(2 * MS, MS).unwrap_err();
    assert_eq!(err.to_string(), "max: at least base");
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..10_000_000_000).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
    ]
}

proptest! {
    #[test]
    fn any_backoff_stays_within_its_bounds(
        a in duration(),
        b in duration(),
        jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Decorrelated), Just(Jitter::None)],
        seed in any::<u64>(),
        skip in 0usize..200,
    ) {
        let (base, max) = if a <= b { (a, b) } else { (b, a) };
        let backoff = Backoff::exponential(base, max).unwrap().jitter(jitter).seed(seed);
        for (n, wait) in backoff.delays().enumerate().skip(skip).take(5) {
            prop_assert!(wait <= max, "{wait:?} > {max:?}");
            match jitter {
                Jitter::Decorrelated => prop_assert!(wait >= base),
                Jitter::None => {
                    let ceiling = 1u128.checked_shl(n as u32)
                        .and_then(|f| base.as_nanos().checked_mul(f))
                        .map_or(max.as_nanos(), |c| c.min(max.as_nanos()));
                    prop_assert_eq!(wait.as_nanos(), ceiling);
                }
                _ => {}
            }
        }
    }
}
