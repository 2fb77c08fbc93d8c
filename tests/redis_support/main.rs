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
