//! What a bulkhead's layer hands its services.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::observe::Observer;
use super::store::Admission;
use crate::load_shed::{Priority, Queue};
use crate::store::OnStoreError;

/// [`BulkheadLayer::retry_after`](super::BulkheadLayer::retry_after)'s
/// default: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Config<St, K, P> {
    pub(crate) store: St,
    pub(crate) per: K,
    pub(crate) priority: P,
    pub(crate) limit: NonZeroU32,
    pub(crate) queue: Option<Queue>,
    pub(crate) namespace: Arc<str>,
    pub(crate) retry_after: Duration,
    pub(crate) on_error: OnStoreError,
    pub(crate) back_pressure: bool,
    pub(crate) observer: Arc<Observer>,
    // The admission of the global key, built on the first poll_ready.
    pub(crate) global: OnceLock<Admission>,
}

impl<St, K, P> Config<St, K, P> {
    pub(crate) fn admission(&self, key: String, priority: Priority) -> Admission {
        Admission {
            key: if self.namespace.is_empty() {
                key
            } else {
                format!("{}:{key}", self.namespace)
            },
            limit: self.limit,
            queue: self.queue,
            priority,
            deadline: None,
        }
    }
}
