#![cfg(all(feature = "bulkhead", feature = "http", feature = "axum"))]
//! Bulkhead: permits per key, the wait queue (bound, priority, order), no
//! permit lost however a caller ends, the HTTP surface and (with feature
//! `redis`) the fleet-wide store.

#[path = "../support/mod.rs"]
mod support;

use std::num::NonZeroU32;

/// A count of permits.
pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a non-zero count")
}

mod drop_safety;
mod http;
mod queue;
mod ready;
