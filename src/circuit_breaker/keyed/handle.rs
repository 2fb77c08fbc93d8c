//! Reading and steering the breakers of a keyed layer.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::config::{Config, InvalidConfig};
use super::super::handle::Handle;
use super::registry::Registry;

/// Reads and steers the breakers of a
/// [`KeyedCircuitBreakerLayer`](super::KeyedCircuitBreakerLayer).
pub struct KeyedHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> KeyedHandle<K> {
    pub(super) fn new(registry: Arc<Registry<K>>) -> Self {
        Self { registry }
    }
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> KeyedHandle<K> {
    /// The handle of `key`'s breaker, if the key is remembered.
    pub fn get(&self, key: &K) -> Option<Handle> {
        let map = self.registry.lock();
        map.entries
            .get(key)
            .map(|entry| Handle::new(entry.breaker.clone()))
    }

    /// The number of keys remembered.
    pub fn len(&self) -> usize {
        self.registry.lock().entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The settings in force for every key: those the layer was created
    /// with, or the latest [`set_config`](Self::set_config) gave.
    pub fn config(&self) -> Config {
        self.registry.lock().config.clone()
    }

    /// Replaces the settings of every key's breaker, and of the keys to
    /// come, from their next call on, as [`Handle::set_config`] does for
    /// one breaker: each key keeps its state, and its window when the new
    /// one has the same kind and size. A config with another
    /// [`name`](Config::name) is refused with [`InvalidConfig::Renamed`] and
    /// changes nothing.
    pub fn set_config(&self, config: Config) -> Result<(), InvalidConfig> {
        self.registry.set_config(config)
    }

    /// The number of keys open or half-open right now.
    pub fn open_keys(&self) -> usize {
        self.registry.ejection.open.load(Ordering::Acquire)
    }
}
