//! What a bulkhead's layer hands its services.

use std::any::TypeId;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::observe::Observer;
use super::store::Admission;
use crate::key::Global;
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
    // The admission of the global key, built once: the global key's calls
    // and readiness checks allocate no key.
    pub(crate) global: OnceLock<Admission>,
}

impl<St, K, P> Config<St, K, P> {
    pub(crate) fn admission(&self, key: String, priority: Priority) -> Admission {
        Admission {
            key: if self.namespace.is_empty() {
                key.into()
            } else {
                format!("{}:{key}", self.namespace).into()
            },
            limit: self.limit,
            queue: self.queue,
            priority,
        }
    }
}

impl<St, K: 'static, P> Config<St, K, P> {
    /// The admission of the [`Global`] key, when `K` is `Global`.
    pub(crate) fn global(&self) -> Option<&Admission> {
        if TypeId::of::<K>() != TypeId::of::<Global>() {
            return None;
        }
        Some(
            self.global
                .get_or_init(|| self.admission(Global::KEY.to_owned(), Priority::Normal)),
        )
    }
}
