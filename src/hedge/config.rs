//! What a layer hands its services: shared by the layer, the service and
//! the future, so none of them depends on another.

use std::sync::Arc;

use super::observe::Observer;
use super::stats::Stats;
use crate::attempt::Budget;

/// One service's settings and the state it shares with the layer's other
/// services.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) classifier: C,
    pub(crate) stats: Arc<Stats>,
    pub(crate) budget: Budget,
    pub(crate) observer: Arc<Observer>,
    pub(crate) max_hedges: u32,
}
