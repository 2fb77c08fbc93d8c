//! `palisade_timeout_calls_total` after a known sequence of calls, read from
//! a `DebuggingRecorder` installed for this thread only.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use palisade::timeout::{Deadline, DeadlineRequest, Timeout, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

use crate::never_answers;
use crate::recording::record_metrics;

const SEC: Duration = Duration::from_secs(1);

fn calls(name: &str, outcome: &str) -> String {
    format!("palisade_timeout_calls_total{{name=\"{name}\",outcome=\"{outcome}\"}}")
}

/// A request type of our own that can carry a deadline.
struct Job(Option<Deadline>);

impl DeadlineRequest for Job {
    fn deadline(&self) -> Option<Deadline> {
        self.0
    }
    fn set_deadline(&mut self, deadline: Deadline) {
        self.0 = Some(deadline);
    }
}

#[test]
fn calls_are_counted_by_name_and_outcome() {
    let ((), values) = record_metrics("palisade_timeout", || async {
        let inventory =
            TimeoutLayer::new(SEC)
                .name("inventory")
                .layer(service_fn(|n: u32| async move {
                    match n {
                        0 => Err("inner error"),
                        1 => Ok(n),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(500) * n).await;
                            Ok(n)
                        }
                    }
                }));
        // Completed: an immediate answer, one within the budget, an inner error.
        assert_eq!(inventory.clone().oneshot(1).await.unwrap(), 1);
        assert_eq!(inventory.clone().oneshot(2).await.unwrap(), 2);
        assert!(inventory.clone().oneshot(0).await.is_err());
        // Timed out: 2.5 s and 5 s against a budget of 1 s.
        for n in [5, 10] {
            assert!(inventory.clone().oneshot(n).await.unwrap_err().is_elapsed());
        }

        // Unnamed: the `default` name.
        let unnamed = Timeout::new(never_answers(Arc::new(AtomicBool::new(false))), SEC);
        assert!(unnamed.oneshot(()).await.unwrap_err().is_elapsed());

        // Per request: a deadline already past fails without a call, and a
        // deadline in the future completes.
        let edge = TimeoutLayer::new(SEC)
            .per_request()
            .name("edge")
            .layer(service_fn(|_: Job| async { Ok::<_, Infallible>(()) }));
        let past = Deadline::at(Instant::now());
        assert!(
            edge.clone()
                .oneshot(Job(Some(past)))
                .await
                .unwrap_err()
                .is_elapsed()
        );
        let later = Deadline::after(SEC / 2);
        assert!(edge.oneshot(Job(Some(later))).await.is_ok());
    });

    let expected = BTreeMap::from([
        (calls("inventory", "completed"), 3.0),
        (calls("inventory", "timed_out"), 2.0),
        (calls("default", "timed_out"), 1.0),
        (calls("edge", "timed_out"), 1.0),
        (calls("edge", "completed"), 1.0),
    ]);
    assert_eq!(values, expected);
}

#[test]
fn a_layer_built_before_the_recorder_still_records_into_it() {
    // Built outside the recorder's scope: keys are looked up per call, so
    // the layer does not hold handles of the no-op recorder.
    let layer = TimeoutLayer::new(SEC).name("early");
    let ((), values) = record_metrics("palisade_timeout", || async move {
        let svc = layer.layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
        svc.oneshot(()).await.unwrap();
    });
    assert_eq!(values, BTreeMap::from([(calls("early", "completed"), 1.0)]));
}
