//! A client-side, outbound limiter that waits rather than fails: it reads
//! what the upstream says of its limits and paces later calls to fit.
//!
//! TODO docs.

mod adaptive;
mod config;
pub mod error;
pub mod future;
mod headers;
mod layer;
mod observe;
mod schedule;
mod service;

pub use self::{
    adaptive::{AdaptiveThrottle, DEFAULT_K, DEFAULT_WINDOW},
    config::{DEFAULT_MAX_WAIT, DEFAULT_PAUSE},
    error::Error,
    layer::ThrottleLayer,
    service::Throttle,
};
pub use crate::attempt::ConfigError;
