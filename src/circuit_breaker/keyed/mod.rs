//! One breaker per key, such as per downstream host.

mod handle;
mod layer;
mod registry;
mod service;

pub use self::handle::KeyedHandle;
pub use self::layer::{KeyedCircuitBreakerLayer, Unkeyed};
pub use self::registry::DEFAULT_MAX_KEYS;
pub use self::service::KeyedCircuitBreaker;
