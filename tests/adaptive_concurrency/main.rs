#![cfg(feature = "adaptive-concurrency")]
//! Adaptive concurrency: the algorithms alone, the limit settling on a
//! simulated service's capacity, permits never leaked, and what the layer
//! reports, all on paused time.

mod algorithms;
mod cancel;
mod convergence;
mod observe;
mod samples;
#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;
