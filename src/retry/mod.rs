//! Retry (docs to come).

mod backoff;
mod config;
pub mod error;
pub mod future;
mod layer;
mod observe;
mod service;

pub use self::{
    backoff::{Backoff, Delays, Jitter},
    config::{DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER},
    error::Error,
    layer::RetryLayer,
    service::Retry,
};
pub use crate::attempt::ConfigError;
