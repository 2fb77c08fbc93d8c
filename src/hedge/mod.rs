//! hedge (docs in progress).

mod config;
pub mod error;
pub mod future;
mod layer;
mod observe;
mod service;
mod stats;

pub use self::{
    error::Error,
    layer::{
        DEFAULT_MAX_HEDGES, DEFAULT_MIN_DELAY, DEFAULT_MIN_SAMPLES, DEFAULT_PERCENTILE,
        DEFAULT_WINDOW, HedgeHandle, HedgeLayer,
    },
    service::Hedge,
};
pub use crate::attempt::ConfigError;
