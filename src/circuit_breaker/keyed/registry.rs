//! The breakers of a keyed layer, one per key, bounded.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::super::breaker::{Breaker, Ejection};
use super::super::config::{Config, InvalidConfig};
use super::super::observe::Observer;
use crate::observability::{RedactedKey, redact_hashable};

/// The default of
/// [`KeyedCircuitBreakerLayer::max_keys`](super::KeyedCircuitBreakerLayer::max_keys):
/// 1,024 keys.
pub const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

/// A key for logs: its digest, never the key itself (for a string key, the
/// same digest as `redact_key` gives).
fn redact<K: Hash>(key: &K) -> RedactedKey {
    redact_hashable(key)
}

pub(super) struct Entry {
    pub(super) breaker: Arc<Breaker>,
    last_used: u64,
}

pub(super) struct Map<K> {
    pub(super) entries: HashMap<K, Entry>,
    tick: u64,
    // The settings a new key's breaker is created with. Under the map's
    // lock: a key created while the settings change gets the new ones, as
    // the keys already there do.
    pub(super) config: Config,
}

pub(super) struct Registry<K> {
    observer: Arc<Observer>,
    // An atomic, so the layer's setter changes it in place.
    pub(super) max_keys: AtomicUsize,
    pub(super) ejection: Arc<Ejection>,
    map: Mutex<Map<K>>,
}

impl<K> Registry<K> {
    pub(super) fn new(config: Config) -> Self {
        Self {
            observer: Observer::new(config.name.clone()),
            max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS.get()),
            ejection: Arc::new(Ejection::new()),
            map: Mutex::new(Map {
                entries: HashMap::new(),
                tick: 0,
                config,
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Map<K>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the settings of every key's breaker, and of the keys to
    /// come; a config with another name changes nothing.
    pub(super) fn set_config(&self, mut config: Config) -> Result<(), InvalidConfig> {
        let mut map = self.lock();
        config.check_name(self.observer.name())?;
        config.name = map.config.name.clone();
        for entry in map.entries.values() {
            entry.breaker.set_config(config.clone())?;
        }
        tracing::info!(
            layer = "circuit_breaker",
            name = self.observer.name(),
            keys = map.entries.len(),
            config = ?config,
            "keyed circuit breaker reconfigured"
        );
        map.config = config;
        Ok(())
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    pub(super) fn breaker(&self, key: K) -> Arc<Breaker> {
        let mut map = self.lock();
        map.tick += 1;
        let tick = map.tick;
        if let Some(entry) = map.entries.get_mut(&key) {
            entry.last_used = tick;
            return entry.breaker.clone();
        }
        // A loop: `max_keys` may have been lowered since the last key came.
        while map.entries.len() >= self.max_keys.load(Ordering::Relaxed) {
            // Forget the least recently used key, closed ones first: an open
            // breaker forgotten would let traffic back to a failing host.
            let victim = map
                .entries
                .iter()
                .min_by_key(|(_, entry)| (entry.breaker.is_ejected(), entry.last_used))
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else { break };
            if let Some(entry) = map.entries.remove(&victim) {
                entry.breaker.detach();
                self.ejection.keys.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(
                    layer = "circuit_breaker",
                    name = self.observer.name(),
                    key = %redact(&victim),
                    "keyed circuit breaker forgot a key"
                );
            }
        }
        let breaker = Arc::new(Breaker::with_ejection(
            map.config.clone(),
            self.observer.clone(),
            Some(redact(&key)),
            Some(self.ejection.clone()),
        ));
        breaker.publish_state();
        self.ejection.keys.fetch_add(1, Ordering::AcqRel);
        map.entries.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: tick,
            },
        );
        breaker
    }
}
