//! Adaptive concurrency: a limit that follows measured latency.

mod algorithm;

pub use self::algorithm::{Algorithm, Sample};
