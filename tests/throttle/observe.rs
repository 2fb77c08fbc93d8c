//! Metrics and events, with the crate's uniform names and fields.

use palisade::throttle::{AdaptiveThrottle, Error, ThrottleLayer};
use tower::{Layer, ServiceExt};

use crate::{SEC, answer, get, get_within, support, upstream};

#[tokio::test(start_paused = true)]
async fn every_decision_is_an_event_with_the_uniform_fields() {
    let logs = support::CapturedLogs::start();
    let (up, _) = upstream(|n| match n {
        0 => answer(429, &[("retry-after", "3")]),
        _ => answer(200, &[]),
    });
    let svc = ThrottleLayer::new().name("payments").layer(up);
    svc.clone().oneshot(get()).await.unwrap();
    assert!(svc.clone().oneshot(get_within(SEC)).await.is_err());
    svc.oneshot(get()).await.unwrap();

    let text = logs.text();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in:\n{text}"))
            .to_owned()
    };
    for (needle, fields) in [
        ("outcome=\"sent\"", &["TRACE", "latency_us=0"][..]),
        (
            "outcome=\"throttled\"",
            &["DEBUG", "latency_us=0", "retry_after_ms=3000"][..],
        ),
        ("outcome=\"waited\"", &["DEBUG", "latency_us=3000000"][..]),
        ("asked for a pause", &["DEBUG", "pause_ms=3000"][..]),
    ] {
        let l = line(needle);
        for field in fields
            .iter()
            .chain(&["layer=\"throttle\"", "name=\"payments\""])
        {
            assert!(l.contains(field), "{field} missing in {l}");
        }
    }
}

#[cfg(feature = "metrics")]
#[test]
fn calls_are_counted_by_outcome_and_waits_measured() {
    use std::collections::BTreeMap;

    let ((), values) = crate::recording::record_metrics("palisade_throttle", || async {
        let (up, _) = upstream(|n| match n {
            0 => answer(429, &[("retry-after", "2")]),
            _ => answer(503, &[]),
        });
        let svc = ThrottleLayer::new().name("api").layer(up);
        svc.clone().oneshot(get()).await.unwrap(); // sent
        assert!(svc.clone().oneshot(get_within(SEC)).await.is_err()); // throttled
        svc.clone().oneshot(get()).await.unwrap(); // waited
        svc.clone().oneshot(get()).await.unwrap(); // sent

        let (up, _) = upstream(|_| answer(503, &[]));
        let adaptive = AdaptiveThrottle::default().seed(1);
        let svc = ThrottleLayer::new().adaptive(adaptive).layer(up);
        let mut rejected = 0;
        for _ in 0..20 {
            if let Err(Error::Rejected) = svc.clone().oneshot(get()).await {
                rejected += 1;
            }
        }
        assert_eq!(rejected, 15, "seeded");
    });
    let calls = |name: &str, outcome: &str| {
        format!("palisade_throttle_calls_total{{name=\"{name}\",outcome=\"{outcome}\"}}")
    };
    let expected = BTreeMap::from([
        (calls("api", "sent"), 2.0),
        (calls("api", "throttled"), 1.0),
        (calls("api", "waited"), 1.0),
        (calls("default", "sent"), 5.0),
        (calls("default", "rejected"), 15.0),
    ]);
    assert_eq!(values, expected);
}

#[cfg(feature = "metrics")]
#[test]
fn each_wait_is_a_histogram_sample() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (up, _) = upstream(|n| match n {
                0 => answer(429, &[("retry-after", "2")]),
                _ => answer(200, &[]),
            });
            let svc = ThrottleLayer::new().name("h").layer(up);
            for _ in 0..3 {
                svc.clone().oneshot(get()).await.unwrap();
            }
        })
    });
    let samples = support::metric_samples(&snapshotter, "palisade_throttle_wait");
    assert_eq!(
        samples,
        std::collections::BTreeMap::from([(
            "palisade_throttle_wait_seconds{name=\"h\"}".to_owned(),
            1.0
        )])
    );
}
