//! Hedges spend the retry budget: none once it is spent, again once
//! successes refill it, and a budget shared with another layer is one budget.

use std::num::NonZeroU32;

use palisade::attempt::Budget;
use tower::ServiceExt;

use crate::{Job, Plan, layer, nz, setup, warm};

fn budget(max: u32, ratio: f64) -> Budget {
    Budget::new(NonZeroU32::new(max).unwrap(), ratio).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_sends_no_hedge_until_successes_refill_it() {
    // 4 tokens: a hedge is sent while more than 2 are left after it.
    let budget = budget(4, 0.5);
    let (svc, backend) = setup(&layer().budget(budget.clone()));
    warm(&svc, 10).await;
    assert_eq!(budget.balance(), 4.0, "full: deposits stop at the top");

    // One slow request: hedged (4 -> 3); the hedge wins and earns 0.5.
    backend.then([Plan::Ok(1000), Plan::Ok(1)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 12);
    assert_eq!(budget.balance(), 3.5);

    // The next slow one: 3.5 -> 2.5 is not more than 2? It is: sent.
    backend.then([Plan::Ok(1000), Plan::Ok(1)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 14);
    assert_eq!(budget.balance(), 3.0);

    // 3 -> 2 is not more than half: refused, and the refusal costs nothing.
    backend.then([Plan::Ok(30)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 15, "no hedge");
    assert_eq!(budget.balance(), 3.5, "only the success's deposit");

    // That success refilled it past 3: hedged again.
    backend.then([Plan::Ok(1000), Plan::Ok(1)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 17, "hedged again");
}

#[tokio::test(start_paused = true)]
async fn a_budget_shared_with_another_layer_is_spent_by_both() {
    let shared = budget(4, 0.5);
    let (svc, backend) = setup(&layer().budget(shared.clone()));
    // Another layer (a retry, another hedge) of the same downstream spends it.
    let (other, other_backend) = setup(&layer().budget(shared.clone()));
    warm(&svc, 10).await;
    warm(&other, 10).await;
    other_backend.then([Plan::Ok(1000), Plan::Ok(1)]);
    other.clone().oneshot(Job).await.unwrap();
    assert_eq!(other_backend.counts.started(), 12, "the other layer hedged");
    other_backend.then([Plan::Ok(1000), Plan::Ok(1)]);
    other.clone().oneshot(Job).await.unwrap();
    assert_eq!(other_backend.counts.started(), 14, "and again");
    assert_eq!(shared.balance(), 3.0);
    // A clone of the budget, as a RetryLayer would hold, takes one for a failure.
    assert!(!shared.clone().withdraw());
    backend.then([Plan::Ok(1000)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 11, "nothing left for this one");
}

#[tokio::test(start_paused = true)]
async fn max_hedges_zero_turns_hedging_off() {
    let (svc, backend) = setup(&layer().max_hedges(0).min_samples(nz(1)));
    warm(&svc, 10).await;
    backend.then([Plan::Ok(1000)]);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(backend.counts.started(), 11);
}

#[cfg(feature = "retry")]
#[tokio::test(start_paused = true)]
async fn a_success_through_a_retry_above_earns_a_shared_budget_once() {
    use palisade::attempt::ErrorIsRetryable;
    use palisade::retry::RetryLayer;
    use tower::Layer;
    // The stack the docs advise: a retry above the hedge, one budget.
    let shared = budget(10, 0.5);
    let (hedged, _backend) = setup(&layer().budget(shared.clone()));
    let svc = RetryLayer::new(ErrorIsRetryable)
        .budget(shared.clone())
        .layer(hedged);
    for _ in 0..4 {
        shared.withdraw();
    }
    assert_eq!(shared.balance(), 6.0);
    svc.clone().oneshot(Job).await.unwrap();
    assert_eq!(shared.balance(), 6.5, "one success earns one share");
}

#[cfg(feature = "retry")]
impl palisade::timeout::DeadlineRequest for Job {
    fn deadline(&self) -> Option<palisade::timeout::Deadline> {
        None
    }
    fn set_deadline(&mut self, _: palisade::timeout::Deadline) {}
}
