//! What the layer records: one count per request by the attempt that
//! answered, one per hedge decision, and the delay.

use palisade::attempt::{Budget, ErrorIsRetryable, Replay};
use palisade::hedge::HedgeLayer;
use tower::{Layer, ServiceExt};

use crate::recording::record_metrics;
use crate::{Backend, Job, Plan, nz};

/// A request that is never sent twice.
#[derive(Debug)]
struct Once;

impl Replay for Once {
    fn replay(&self) -> Option<Self> {
        None
    }
}

#[test]
fn every_request_and_hedge_decision_is_counted() {
    let ((), values) = record_metrics("palisade_hedge_", || async {
        let budget = Budget::new(nz(4), 0.1).unwrap();
        let layer = HedgeLayer::new(ErrorIsRetryable)
            .min_samples(nz(10))
            .budget(budget.clone())
            .name("orders");
        let backend = Backend::new();
        let svc = layer.layer(backend.service::<Job>(Plan::Ok(10)));
        let once = layer.layer(backend.service::<Once>(Plan::Ok(10)));
        for _ in 0..10 {
            svc.clone().oneshot(Job).await.unwrap();
        }
        // A hedge wins, then the first attempt wins over its hedge.
        backend.then([Plan::Ok(1000), Plan::Ok(1)]);
        svc.clone().oneshot(Job).await.unwrap();
        backend.then([Plan::Ok(12), Plan::Ok(100)]);
        svc.clone().oneshot(Job).await.unwrap();
        // 2 tokens left: refused.
        backend.then([Plan::Ok(100)]);
        svc.clone().oneshot(Job).await.unwrap();
        once.clone().oneshot(Once).await.unwrap();
    });
    let get = |k: &str| values.get(k).copied();
    assert_eq!(
        get("palisade_hedge_calls_total{name=\"orders\",outcome=\"primary\"}"),
        Some(12.0),
        "{values:#?}"
    );
    assert_eq!(
        get("palisade_hedge_calls_total{name=\"orders\",outcome=\"hedge\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("palisade_hedge_calls_total{name=\"orders\",outcome=\"not_replayable\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("palisade_hedge_hedges_total{name=\"orders\",outcome=\"sent\"}"),
        Some(2.0)
    );
    assert_eq!(
        get("palisade_hedge_hedges_total{name=\"orders\",outcome=\"budget_exhausted\"}"),
        Some(1.0)
    );
    let delay = get("palisade_hedge_delay_seconds{name=\"orders\"}").unwrap();
    assert!(delay > 0.0099 && delay < 0.011, "{delay}");
}
