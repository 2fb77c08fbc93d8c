//! The one way the Redis stores connect, so they reconnect alike.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A reconnecting, multiplexed connection to `url`.
///
/// Connecting gives up after a second and reconnects with a short backoff
/// (20 ms growing to 500 ms), so a store recovers soon after Redis is back.
/// There is no response timeout here: each store bounds its own calls.
pub(crate) async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(None)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}
