//! The private Redis that store tests rely on: starts, answers, dies and comes back.

#[path = "../support.rs"]
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
