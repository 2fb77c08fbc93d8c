//! The order API demo, driven over real HTTP: each test starts the app on a
//! loopback listener in-process and talks to it with hyper-util's client.
//! The demo's own unit tests run in its package (`cargo test -p order-api --lib`).
//!
//! One file per concern; `harness` starts instances and speaks HTTP to them.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use harness::{Backend, TestApp, order_body, product_statuses, requests};
use order_api::config;

/// Runs each contract test twice: on memory stores, and on Redis stores (a
/// private redis-server per test; skipped loudly when redis-server is
/// missing, unless `PALISADE_REQUIRE_REDIS=1`).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        on_both_stores!(@ on_memory, on_redis; $($name),*);
    };
    (@ $memory:ident, $redis:ident; $($name:ident),*) => {
        mod $memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Backend::memory()).await
                }
            )*
        }
        mod $redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(backend) = Backend::redis(stringify!($name)) else {
                        return;
                    };
                    super::$name(&backend).await
                }
            )*
        }
    };
}

mod admin;
mod bulkheads;
mod config_file;
mod exactly_once;
mod faults;
mod harness;
mod idempotency;
mod orders;
mod postgres;
#[path = "../../../../tests/support/proxy.rs"]
mod proxy;
mod rate_limit;
#[path = "../../../../tests/support/mod.rs"]
mod support;
mod validation;
