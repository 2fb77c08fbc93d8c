//! The test support other tests rely on: the private Redis starts, answers,
//! dies and comes back; captured logs hold each test's events.

mod captured_logs;
#[path = "../support/mod.rs"]
mod support;

use support::RedisServer;

#[test]
fn private_redis_can_be_killed_and_restarted_on_the_same_port() {
    let Some(mut redis) = RedisServer::start_or_skip("private_redis_can_be_killed") else {
        return;
    };
    assert_ne!(redis.port(), 6379, "tests never use the shared Redis");
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    assert_eq!(redis.cli(&["CONFIG", "GET", "save"]), "save");

    let port = redis.port();
    redis.kill();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.cli(&["GET", "k"]),
        "",
        "restarted empty: nothing was persisted"
    );
}

#[test]
fn private_cluster_spreads_slots_over_three_masters() {
    let Some(mut cluster) = support::RedisCluster::start_or_skip("private_cluster_spreads_slots")
    else {
        return;
    };
    assert_eq!(cluster.urls().len(), 3);
    // Keys in different slots land on different masters; each answers only its own.
    let mut owners = std::collections::HashSet::new();
    for key in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let node = cluster.node_for_key(key);
        assert_eq!(node.cli(&["SET", key, "1"]), "OK");
        owners.insert(node.port());
    }
    assert!(
        owners.len() > 1,
        "eight keys all on one master: slots not spread"
    );
    // A hash tag pins keys to one slot.
    let tagged = cluster.node_for_key("{order}:a").port();
    assert_eq!(cluster.node_for_key("{order}:b").port(), tagged);
}

#[path = "../support/proxy.rs"]
mod proxy;

use std::time::Duration;

use proxy::FaultProxy;
use redis::AsyncCommands;

async fn ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn fault_proxy_passes_delays_cuts_stalls_and_restores() {
    let Some(redis) = RedisServer::start_or_skip("fault_proxy") else {
        return;
    };
    let proxy = FaultProxy::start(redis.port()).await;
    assert_eq!(ping(&proxy.url()).await.unwrap(), "PONG");

    // Latency: a round trip pays it twice.
    proxy.set_latency(Duration::from_millis(20));
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let sent = std::time::Instant::now();
    let _: () = conn.set("k", "v").await.unwrap();
    assert!(
        sent.elapsed() >= Duration::from_millis(40),
        "{:?}",
        sent.elapsed()
    );
    proxy.set_latency(Duration::ZERO);

    // Stall: the connection stays open and nothing answers.
    proxy.stall();
    let stalled =
        tokio::time::timeout(Duration::from_millis(200), conn.get::<_, String>("k")).await;
    assert!(stalled.is_err(), "a stalled proxy answered: {stalled:?}");
    proxy.restore();

    // Cut: the open connection dies and new ones are closed at once.
    proxy.cut();
    assert!(conn.get::<_, String>("k").await.is_err());
    assert!(ping(&proxy.url()).await.is_err());
    proxy.restore();
    assert_eq!(ping(&proxy.url()).await.unwrap(), "PONG");
    assert!(proxy.connections() >= 4, "{}", proxy.connections());
}
