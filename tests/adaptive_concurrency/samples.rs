//! What the algorithm is fed: one sample per completed request, measured
//! from admission to response.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::adaptive_concurrency::{AdaptiveConcurrencyLayer, Algorithm, Sample};
use palisade::load_shed::{Priority, Queue};
use tower::{Layer, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// Keeps its limit and records what it is fed.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Sample>>>);

impl Algorithm for Recorder {
    fn initial_limit(&self) -> u32 {
        1
    }

    fn update(&mut self, sample: Sample, _now: Duration) -> u32 {
        self.0.lock().unwrap().push(sample);
        1
    }
}

#[tokio::test(start_paused = true)]
async fn a_sample_excludes_the_queue_and_counts_an_inner_error_as_dropped() {
    let recorder = Recorder::default();
    let layer = AdaptiveConcurrencyLayer::new(recorder.clone())
        .queue(Queue::new(4, Duration::from_secs(1)).unwrap())
        .priority(|ms: &u64| {
            if *ms == 0 {
                Priority::NeverShed
            } else {
                Priority::Normal
            }
        });
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if ms == 7 { Err("failed") } else { Ok(ms) }
    }));
    let first = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    // Waits 100 ms for the permit, then fails after 7 ms.
    let queued = tokio::spawn(svc.clone().oneshot(7));
    // NeverShed passes the full gate, and teaches nothing.
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 0);
    assert_eq!(first.await.unwrap().unwrap(), 100);
    assert!(queued.await.unwrap().is_err());
    // Dropped before its answer: teaches nothing either.
    let mut cancelled = tokio_test::task::spawn(svc.oneshot(50));
    assert!(cancelled.poll().is_pending());
    drop(cancelled);

    let samples = recorder.0.lock().unwrap().clone();
    assert_eq!(
        samples,
        [
            Sample::new(100 * MS, 1, false),
            Sample::new(7 * MS, 1, true),
        ]
    );
}
