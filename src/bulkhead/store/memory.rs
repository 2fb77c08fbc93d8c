//! Permits in this process: one gate per key, bounded in number.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use super::{Admission, Refused, Store};
use crate::load_shed::Queue;
use crate::load_shed::gate::{Gate, Permit as GatePermit};

/// The keys a [`MemoryStore::new`] holds at most: 100,000.
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

/// The permits of this process: a gate (a limit and its queue) per key.
///
/// A key's gate is created on its first request, with that request's limit
/// and queue, and follows the limit of each later request for it and of
/// [`Store::set_limit`] (layers that share a store keep apart by
/// [`namespace`](crate::bulkhead::BulkheadLayer::namespace)). Gates nobody
/// holds or waits on are forgotten whenever the store reaches
/// [`DEFAULT_MAX_KEYS`] (or its [`with_max_keys`](Self::with_max_keys));
/// when it is full of busy keys, new keys share one overflow gate with the
/// same limit, so a flood of keys cannot grow memory nor free anyone's
/// permits. Clones share the permits.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // The first key's gate, kept apart and never forgotten: a global
    // bulkhead's only key is found without a hash or a lock.
    first: OnceLock<(Arc<str>, Arc<Gate>)>,
    gates: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    overflow: Mutex<Option<Arc<Gate>>>,
    max_keys: NonZeroUsize,
}

/// A held permit of a [`MemoryStore`]; dropping it releases it.
#[derive(Debug)]
pub struct MemoryPermit {
    _permit: GatePermit,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store of at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// An empty store of at most `max_keys` keys.
    pub fn with_max_keys(max_keys: NonZeroUsize) -> Self {
        Self {
            inner: Arc::new(Inner {
                first: OnceLock::new(),
                gates: Mutex::new(HashMap::new()),
                overflow: Mutex::new(None),
                max_keys,
            }),
        }
    }

    /// The most keys it holds.
    pub fn max_keys(&self) -> NonZeroUsize {
        self.inner.max_keys
    }

    /// The gate of the first key, if `key` is it: found without a hash, a
    /// lock or a reference count.
    #[inline]
    fn first(&self, key: &Arc<str>) -> Option<&Arc<Gate>> {
        let (first, gate) = self.inner.first.get()?;
        (Arc::ptr_eq(first, key) || **first == **key).then_some(gate)
    }

    // Out of line: the map keeps the first key's path small.
    #[inline(never)]
    fn try_admit_keyed(&self, admission: &Admission) -> Option<GatePermit> {
        // `gate` brings the gate to the admission's limit.
        self.gate(&admission.key, admission.limit.get(), admission.queue)
            .try_admit(admission.priority)
    }

    /// The gate of `key`, created with `limit` and `queue` if new, and
    /// brought to `limit` if it had another (the layer's handle changed it).
    pub(crate) fn gate(&self, key: &Arc<str>, limit: u32, queue: Option<Queue>) -> Arc<Gate> {
        let gate = self.find_or_create(key, limit, queue);
        follow(&gate, limit);
        gate
    }

    fn find_or_create(&self, key: &Arc<str>, limit: u32, queue: Option<Queue>) -> Arc<Gate> {
        let (first, gate) = self
            .inner
            .first
            .get_or_init(|| (key.clone(), Gate::new(limit, queue)));
        if **first == **key {
            return gate.clone();
        }
        let mut gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates.get(key) {
            return gate.clone();
        }
        // The first key counts toward the bound too.
        let room = self.inner.max_keys.get() - 1;
        if gates.len() >= room {
            // Only a gate nobody else holds: a caller between `gate()` and
            // its permit holds one that looks idle, and forgetting it would
            // give the key a second gate (and twice its limit). Permits and
            // waiters hold theirs too.
            gates.retain(|_, gate| Arc::strong_count(gate) > 1 || !gate.is_idle());
        }
        if gates.len() >= room {
            drop(gates);
            let mut overflow = self
                .inner
                .overflow
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            return overflow
                .get_or_insert_with(|| Gate::new(limit, queue))
                .clone();
        }
        let gate = Gate::new(limit, queue);
        gates.insert(key.clone(), gate.clone());
        gate
    }

    /// Every gate of `namespace` now, the overflow gate included.
    fn gates_of(&self, namespace: &str) -> Vec<Arc<Gate>> {
        let of = |key: &str| {
            namespace.is_empty()
                || key
                    .strip_prefix(namespace)
                    .is_some_and(|rest| rest.starts_with(':'))
        };
        let mut found = Vec::new();
        if let Some((first, gate)) = self.inner.first.get()
            && of(first)
        {
            found.push(gate.clone());
        }
        let gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        found.extend(
            gates
                .iter()
                .filter(|(key, _)| of(key))
                .map(|(_, gate)| gate.clone()),
        );
        drop(gates);
        let overflow = self
            .inner
            .overflow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        found.extend(overflow.clone());
        found
    }

    /// The keys it holds a gate for now (busy or not yet swept).
    pub fn len(&self) -> usize {
        self.inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Permits held under `key` now.
    pub fn in_flight(&self, key: &str) -> u32 {
        if let Some((first, gate)) = self.inner.first.get()
            && **first == *key
        {
            return gate.in_flight();
        }
        let gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        gates.get(key).map_or(0, |gate| gate.in_flight())
    }

    /// Requests queued under `key` now.
    pub fn queued(&self, key: &str) -> usize {
        if let Some((first, gate)) = self.inner.first.get()
            && **first == *key
        {
            return gate.queued();
        }
        let gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        gates.get(key).map_or(0, |gate| gate.queued())
    }
}

impl Store for MemoryStore {
    type Permit = MemoryPermit;

    async fn acquire(&self, admission: Admission) -> Result<MemoryPermit, Refused> {
        let gate = self.gate(&admission.key, admission.limit.get(), admission.queue);
        gate.acquire(admission.priority)
            .await
            .map(|permit| MemoryPermit { _permit: permit })
            .map_err(Refused::Shed)
    }

    #[inline]
    fn try_acquire_now(&self, admission: &Admission) -> Option<MemoryPermit> {
        let permit = match self.first(&admission.key) {
            Some(gate) => {
                follow(gate, admission.limit.get());
                gate.try_admit(admission.priority)
            }
            None => self.try_admit_keyed(admission),
        };
        permit.map(|permit| MemoryPermit { _permit: permit })
    }

    fn poll_capacity(&self, admission: &Admission, cx: &mut Context<'_>) -> Poll<()> {
        self.gate(&admission.key, admission.limit.get(), admission.queue)
            .poll_capacity(cx)
    }

    fn set_limit(&self, namespace: &str, limit: NonZeroU32) {
        // Outside the map's lock: a new limit hands permits to waiters.
        for gate in self.gates_of(namespace) {
            gate.set_limit(limit.get());
        }
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Brings `gate` to `limit`, the limit of a request for it: one load while
/// the limit is unchanged.
#[inline]
fn follow(gate: &Gate, limit: u32) {
    if gate.limit() != limit {
        follow_slow(gate, limit);
    }
}

#[cold]
#[inline(never)]
fn follow_slow(gate: &Gate, limit: u32) {
    gate.set_limit(limit);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::load_shed::Priority;
    use crate::load_shed::gate::Admit;

    /// On a multi-thread runtime, a caller holds a key's gate between
    /// `gate()` and taking its permit; a sweep for another key in that
    /// window must not forget the gate, or the key's next caller gets a new
    /// one and the key runs twice its limit.
    #[test]
    fn a_gate_being_acquired_is_not_forgotten_by_a_sweep() {
        let store = MemoryStore::with_max_keys(NonZeroUsize::new(2).unwrap());
        let key = |k: &str| Arc::<str>::from(k);
        let _first = store.gate(&key("first"), 1, None);
        // Caller 1 has the gate of `a`, and has not taken a permit yet.
        let a1 = store.gate(&key("a"), 1, None);
        // Meanwhile another key sweeps the full store.
        let _b = store.gate(&key("b"), 1, None);
        // Caller 1 takes its permit; caller 2 comes for `a`.
        let Admit::Now(_held) = a1.try_acquire(Priority::Normal) else {
            panic!("the first permit of `a`")
        };
        let a2 = store.gate(&key("a"), 1, None);
        assert!(
            matches!(a2.try_acquire(Priority::Normal), Admit::Refused(_)),
            "two permits of `a` held at once, its limit is 1"
        );
    }
}
