//! What a bulkhead's layer hands its services.

use std::any::TypeId;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
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
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Option<Queue>,
    pub(crate) namespace: Arc<str>,
    pub(crate) retry_after: Duration,
    pub(crate) on_error: OnStoreError,
    pub(crate) back_pressure: bool,
    pub(crate) observer: Arc<Observer>,
}

/// What a layer shares with its clones, the services they build and its
/// handles: created once, by the layer's constructor.
#[derive(Debug)]
pub(crate) struct Shared {
    max_in_flight: AtomicU32,
    // The namespace the handle applies a new limit to.
    namespace: Mutex<Arc<str>>,
}

impl Shared {
    pub(crate) fn new(max_in_flight: NonZeroU32) -> Arc<Self> {
        Arc::new(Self {
            max_in_flight: AtomicU32::new(max_in_flight.get()),
            namespace: Mutex::new(Arc::from("")),
        })
    }

    #[inline]
    pub(crate) fn max_in_flight(&self) -> NonZeroU32 {
        // Relaxed: one value that publishes nothing else. Only ever stored
        // from a `NonZeroU32`.
        NonZeroU32::new(self.max_in_flight.load(Relaxed)).unwrap_or(NonZeroU32::MIN)
    }

    pub(crate) fn set_max_in_flight(&self, limit: NonZeroU32) {
        self.max_in_flight.store(limit.get(), Relaxed);
    }

    pub(crate) fn namespace(&self) -> Arc<str> {
        self.namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_namespace(&self, namespace: Arc<str>) {
        *self
            .namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = namespace;
    }
}

impl<St, K, P> Config<St, K, P> {
    /// The limit now.
    #[inline]
    pub(crate) fn limit(&self) -> NonZeroU32 {
        self.shared.max_in_flight()
    }

    pub(crate) fn admission(&self, key: String, priority: Priority) -> Admission {
        Admission {
            key: if self.namespace.is_empty() {
                key.into()
            } else {
                format!("{}:{key}", self.namespace).into()
            },
            limit: self.limit(),
            queue: self.queue,
            priority,
        }
    }
}

impl<St, K: 'static, P> Config<St, K, P> {
    /// The admission of the [`Global`] key, when `K` is `Global`: a service
    /// builds it once, so the global key's calls and readiness checks
    /// allocate no key.
    pub(crate) fn global(&self) -> Option<Admission> {
        if TypeId::of::<K>() != TypeId::of::<Global>() {
            return None;
        }
        Some(self.admission(Global::KEY.to_owned(), Priority::Normal))
    }
}
