//! Store pub/sub against a real redis-server: two stores (two replicas' worth) on one server
//! hear each other, and the subscription comes back by itself after Redis is killed and
//! restarted on the same port (the epoch moves, so a subscriber knows to re-read state).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod redis_common;
#[path = "common/util.rs"]
mod util;

use std::time::Duration;

use bytes::Bytes;
use moodle_edge::internals::store::config::{StoreBackend, StoreConfig};
use moodle_edge::internals::store::Store;
use redis_common::RedisServer;
use tokio::sync::broadcast;
use util::free_port;

fn store(redis: &RedisServer) -> Store {
    Store::build(&StoreConfig {
        backend: StoreBackend::Redis,
        redis_url: redis.url(),
        redis_key_prefix: "pubsub-test:".into(),
        ..StoreConfig::default()
    })
    .unwrap()
}

/// Waits (bounded) for the epoch to reach at least `at_least`.
async fn epoch_reaches(store: &Store, at_least: u64) {
    let mut epochs = store.epochs();
    tokio::time::timeout(Duration::from_secs(15), epochs.wait_for(|e| *e >= at_least))
        .await
        .expect("pub/sub subscription not (re)established in 15 s")
        .unwrap();
}

/// The next message, or a failure after 10 s.
async fn next(rx: &mut broadcast::Receiver<Bytes>) -> Bytes {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no message within 10 s")
        .unwrap()
}

#[tokio::test]
async fn two_replicas_hear_each_other_and_survive_a_redis_restart() {
    let mut redis = RedisServer::start(free_port());
    let (a, b) = (store(&redis), store(&redis));
    let mut on_a = a.subscribe("logout");
    let mut on_b = b.subscribe("logout");
    let mut other_b = b.subscribe("breaker");
    epoch_reaches(&a, 1).await;
    epoch_reaches(&b, 1).await;

    a.publish("logout", b"session-1").await.unwrap();
    assert_eq!(next(&mut on_b).await, Bytes::from_static(b"session-1"));
    assert_eq!(next(&mut on_a).await, Bytes::from_static(b"session-1"));
    assert!(other_b.try_recv().is_err(), "channels are apart");

    // The prefix names the channel in Redis.
    let channels = redis.cli(&["pubsub", "channels", "*"]);
    assert!(channels.contains("pubsub-test:logout"), "{channels}");

    // A channel added after the connection was made is subscribed on the running connection.
    let mut late = a.subscribe("late");
    wait_subscribed(&redis, "pubsub-test:late").await;
    b.publish("late", b"x").await.unwrap();
    assert_eq!(next(&mut late).await, Bytes::from_static(b"x"));

    // Redis killed and restarted empty: publishing fails meanwhile (an error, not a panic),
    // then both subscriptions come back without anyone asking.
    redis.stop();
    assert!(a.publish("logout", b"lost").await.is_err());
    redis.restart();
    epoch_reaches(&a, 2).await;
    epoch_reaches(&b, 2).await;
    // The ordinary connection reconnects by itself too; poll until a publish goes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while b.publish("logout", b"session-2").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "publish never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(next(&mut on_a).await, Bytes::from_static(b"session-2"));
}

/// The keep-alive PING (every 5 s) on a subscribed connection does not end it: a reconnection
/// moves the epoch, and every subscriber then drops what it cached (the session copies).
#[tokio::test]
async fn a_quiet_subscription_outlives_its_keepalive_pings() {
    let redis = RedisServer::start(free_port());
    let (a, b) = (store(&redis), store(&redis));
    let mut on_a = a.subscribe("quiet");
    epoch_reaches(&a, 1).await;
    // Two pings and a half.
    tokio::time::sleep(Duration::from_millis(12_500)).await;
    assert_eq!(
        *a.epochs().borrow(),
        1,
        "the pub/sub connection was re-made while Redis was up"
    );
    b.publish("quiet", b"still here").await.unwrap();
    assert_eq!(next(&mut on_a).await, Bytes::from_static(b"still here"));
}

#[tokio::test]
async fn a_frozen_redis_delays_messages_but_does_not_lose_the_subscription() {
    let mut redis = RedisServer::start(free_port());
    let (a, b) = (store(&redis), store(&redis));
    let mut on_a = a.subscribe("c");
    epoch_reaches(&a, 1).await;
    b.publish("c", b"0").await.unwrap();
    assert_eq!(next(&mut on_a).await, Bytes::from_static(b"0"));
    redis.freeze();
    // Bounded: the store's response timeout ends the publish while Redis is frozen.
    let frozen = tokio::time::timeout(Duration::from_secs(10), b.publish("c", b"1")).await;
    assert!(
        matches!(frozen, Ok(Err(_))),
        "publish to a frozen redis must fail in time"
    );
    redis.thaw();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while b.publish("c", b"2").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "publish never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever the frozen server did with the first one, the second arrives.
    loop {
        if next(&mut on_a).await == Bytes::from_static(b"2") {
            break;
        }
    }
}

#[tokio::test]
async fn the_memory_store_delivers_locally() {
    let store = Store::build(&StoreConfig::default()).unwrap();
    let mut rx = store.subscribe("logout");
    store.publish("logout", b"s").await.unwrap();
    assert_eq!(next(&mut rx).await, Bytes::from_static(b"s"));
    assert_eq!(*store.epochs().borrow(), 0);
}

async fn wait_subscribed(redis: &RedisServer, channel: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis.cli(&["pubsub", "channels", "*"]).contains(channel) {
        assert!(
            std::time::Instant::now() < deadline,
            "{channel} never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
