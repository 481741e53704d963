//! Two (or three) real moodle-edge processes on loopback in front of one stand-in Moodle,
//! sharing rate limits and the circuit breaker through one real redis-server; and what they do
//! when that Redis is stopped, restarted, frozen (SIGSTOP) and thawed (SIGCONT).
//!
//! Counts, not clocks: the shared-limit test uses a limit whose refill (1 a minute) cannot
//! change the admitted count by more than the 5% margin however slow the machine is; the fault
//! tests bound every answer by the client's 10 s timeout and print what they saw.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod redis_common;
mod ws_common;

use std::time::{Duration, Instant};

use redis_common::RedisServer;
use serde_json::{json, Value};
use ws_common::*;

fn store(redis: &RedisServer) -> Value {
    json!({ "store": {
        "backend": "redis",
        "redis_url": redis.url(),
        "redis_key_prefix": "replicas-test:",
    }})
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

async fn breaker_state(edge: &Edge) -> f64 {
    edge.metric(&series(
        "moodle_edge_ws_breaker_state",
        &[("scope", "upstream")],
    ))
    .await
}

/// Both replicas report the store healthy on /readyz (their Redis connection is made).
async fn ready(edges: &[&Edge]) {
    for e in edges {
        let url = format!("http://{}/readyz", e.admin);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = e.http.get(&url).send().await.map(|r| r.status() == 200);
            if ok.unwrap_or(false) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica never ready:\n{}",
                e.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn assert_no_panic(edges: &[&Edge]) {
    for e in edges {
        let out = e.output();
        assert!(!out.contains("panicked"), "a replica panicked:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_rate_is_shared_by_both_replicas() {
    let redis = RedisServer::start(free_port());
    let moodle = Moodle::start();
    // 100 at once, then 1 a minute: within the test the refill adds at most a call or two.
    let ws = json!({
        "max_concurrent_per_token": 0,
        "rate_limits": [{ "key": "token", "rate": "1/min", "burst": 100 }],
    });
    let a = Edge::start_with(&moodle.url(), ws.clone(), store(&redis), &[]).await;
    let b = Edge::start_with(&moodle.url(), ws, store(&redis), &[]).await;
    ready(&[&a, &b]).await;
    let t = token(1);
    let (mut admitted, mut refused) = (0u32, 0u32);
    let mut refusal = None;
    // 300 calls, 6 at a time, alternating replicas: each replica alone would admit 100.
    for _ in 0..50 {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                if i % 2 == 0 { &a } else { &b }.spawn_call(&t, "core_webservice_get_site_info")
            })
            .collect();
        for c in calls {
            let reply = c.await.unwrap();
            match reply.status {
                200 => admitted += 1,
                429 => {
                    refused += 1;
                    refusal.get_or_insert(reply);
                }
                s => panic!("unexpected {s}: {}", reply.text()),
            }
        }
    }
    println!("shared limit 100 + 1/min: admitted {admitted}, refused {refused} of 300");
    for e in [&a, &b] {
        let f = e.metric("moodle_edge_ws_limit_store_fallbacks_total").await;
        assert_eq!(
            f,
            0.0,
            "a replica fell back to its local limiter:\n{}",
            e.output()
        );
    }
    assert!(
        (100..=105).contains(&admitted),
        "admitted {admitted} across both replicas; the limit is 100 (+5%)"
    );
    assert_eq!(
        moodle.count_fn("core_webservice_get_site_info"),
        admitted as usize
    );
    // The refusal is the local limiter's: Moodle-shaped, with Retry-After.
    let refusal = refusal.unwrap();
    refusal.assert_moodle_json(429, "toomanyrequests");
    assert!((1..=60).contains(&refusal.retry_after()));
    // Both replicas asked Redis; neither fell back.
    for e in [&a, &b] {
        assert_eq!(
            e.metric("moodle_edge_ws_limit_store_fallbacks_total").await,
            0.0
        );
        assert!(e.metric("moodle_edge_ws_limit_store_seconds_count").await > 0.0);
    }
    // The bucket lives in Redis under the prefix, the token only hashed, with a TTL.
    let keys = redis.cli(&["keys", "replicas-test:rl:*"]);
    assert!(keys.contains("replicas-test:rl:token:"), "{keys}");
    assert!(!keys.contains(&t), "raw token in a key: {keys}");
    let key = keys.lines().next().unwrap().trim().to_string();
    let ttl: i64 = redis.cli(&["pttl", &key]).trim().parse().unwrap();
    assert!(ttl > 0, "bucket key without a TTL");
    a.assert_secrets_absent(&[&t]).await;
    assert_no_panic(&[&a, &b]);
}

fn breaker_config(open_for: &str) -> Value {
    json!({
        "max_concurrent_per_token": 0,
        "circuit_breaker": {
            "window": "30s",
            "min_requests": 4,
            "error_rate": 0.5,
            "open_for": open_for,
        },
    })
}

/// Four failures through `edge`: its own count opens its breaker.
async fn open_through(edge: &Edge, moodle: &Moodle, t: &str) {
    moodle.on("mod_broken_call", Act::Status(503));
    for _ in 0..4 {
        assert_eq!(edge.call(t, "mod_broken_call", true).await.status, 503);
    }
    assert_eq!(breaker_state(edge).await, 1.0, "opened on its own count");
}

/// Polls (no calls through `edge`) until its breaker gauge shows `state`.
async fn gauge_reaches(edge: &Edge, state: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while breaker_state(edge).await != state {
        assert!(Instant::now() < deadline, "{what}:\n{}", edge.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opened_by_one_replica_stops_calls_on_the_others() {
    let redis = RedisServer::start(free_port());
    let moodle = Moodle::start();
    // Open far longer than any test step can take on a loaded machine.
    let ws = breaker_config("120s");
    let a = Edge::start_with(&moodle.url(), ws.clone(), store(&redis), &[]).await;
    let b = Edge::start_with(&moodle.url(), ws.clone(), store(&redis), &[]).await;
    ready(&[&a, &b]).await;
    let t = token(2);
    open_through(&a, &moodle, &t).await;
    // B has seen no failure itself, yet follows A and stops calling Moodle.
    gauge_reaches(&b, 1.0, "B never followed A's breaker").await;
    let reached = moodle.count();
    for _ in 0..5 {
        b.call(&t, "core_webservice_get_site_info", true)
            .await
            .assert_moodle_json(503, "serviceunavailable");
    }
    assert_eq!(moodle.count(), reached, "B let calls through while open");
    assert!(
        b.metric(&series(
            "moodle_edge_ws_breaker_sync_total",
            &[("direction", "received")]
        ))
        .await
            >= 1.0
    );

    // A replica that starts now picks up the open state kept in Redis.
    let c = Edge::start_with(&moodle.url(), ws, store(&redis), &[]).await;
    gauge_reaches(&c, 1.0, "C did not pick up the open breaker").await;
    c.call(&t, "core_webservice_get_site_info", true)
        .await
        .assert_moodle_json(503, "serviceunavailable");
    assert_eq!(moodle.count(), reached);
    assert_no_panic(&[&a, &b, &c]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_close_together_after_one_probe() {
    let redis = RedisServer::start(free_port());
    let moodle = Moodle::start();
    let ws = breaker_config("2s");
    let a = Edge::start_with(&moodle.url(), ws.clone(), store(&redis), &[]).await;
    let b = Edge::start_with(&moodle.url(), ws, store(&redis), &[]).await;
    ready(&[&a, &b]).await;
    let t = token(4);
    open_through(&a, &moodle, &t).await;
    // B's gauge moves only on messages while nobody calls B.
    gauge_reaches(&b, 1.0, "B never followed A's breaker").await;
    // A's probe after open_for succeeds: A closes, and B closes with it, without a call.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a
        .call(&t, "core_webservice_get_site_info", true)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "A never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gauge_reaches(&b, 0.0, "B did not close with A").await;
    assert_eq!(
        b.call(&t, "core_webservice_get_site_info", true)
            .await
            .status,
        200
    );
    let half_open = series(
        "moodle_edge_ws_breaker_transitions_total",
        &[("scope", "upstream"), ("to", "half_open")],
    );
    assert!(
        b.metric(&half_open).await >= 1.0,
        "B heard A's probe go out"
    );
    assert_no_panic(&[&a, &b]);
}

/// What one phase of the fault test saw.
#[derive(Default, Debug)]
struct Figures {
    served: u32,
    refused: u32,
    failed: u32,
    slowest: Duration,
}

/// `n` calls, 4 at a time, half to each replica; every answer must come within 10 s.
async fn load(a: &Edge, b: &Edge, token: &str, n: usize) -> (Figures, Figures) {
    let (mut fa, mut fb) = (Figures::default(), Figures::default());
    for _ in 0..n / 4 {
        let started = Instant::now();
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let e = if i % 2 == 0 { a } else { b };
                (
                    i % 2 == 0,
                    e.spawn_call(token, "core_webservice_get_site_info"),
                )
            })
            .collect();
        for (on_a, c) in calls {
            let f = if on_a { &mut fa } else { &mut fb };
            match tokio::time::timeout(Duration::from_secs(10), c).await {
                Ok(Ok(r)) => match r.status {
                    200 => f.served += 1,
                    429 | 503 => f.refused += 1,
                    _ => f.failed += 1,
                },
                _ => f.failed += 1,
            }
            f.slowest = f.slowest.max(started.elapsed());
        }
    }
    (fa, fb)
}

/// Calls until `edge` reports Redis healthy again (bounded).
async fn until_recovered(edge: &Edge, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = edge
            .call(token, "core_webservice_get_site_info", true)
            .await;
        if edge.metric("moodle_edge_ws_limit_store_degraded").await == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered from the redis fault"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_restarted_and_frozen_under_load() {
    let mut redis = RedisServer::start(free_port());
    let moodle = Moodle::start();
    // A generous limit (nothing refused while Redis answers); A fails open to its own limiter
    // (the default), B fails closed.
    let ws = |policy: &str| {
        json!({
            "max_concurrent_per_token": 0,
            "rate_limits": [{ "key": "token", "rate": "100/s", "burst": 1000 }],
            "across_replicas": {
                "on_store_error": policy,
                "store_timeout": "250ms",
                "retry_store_after": "500ms",
            },
        })
    };
    let a = Edge::start_with(&moodle.url(), ws("local"), store(&redis), &[]).await;
    let b = Edge::start_with(&moodle.url(), ws("closed"), store(&redis), &[]).await;
    ready(&[&a, &b]).await;
    let t = token(3);
    let mut report = Vec::new();

    let (fa, fb) = load(&a, &b, &t, 40).await;
    assert_eq!((fa.served, fb.served), (20, 20), "healthy: {fa:?} {fb:?}");
    report.push(("healthy", fa, fb));

    redis.stop();
    let (fa, fb) = load(&a, &b, &t, 40).await;
    assert_eq!(fa.served, 20, "A fails open to its local limiter: {fa:?}");
    assert_eq!(fb.refused, 20, "B fails closed: {fb:?}");
    report.push(("redis stopped", fa, fb));

    redis.restart();
    until_recovered(&a, &t).await;
    until_recovered(&b, &t).await;
    let (fa, fb) = load(&a, &b, &t, 40).await;
    assert_eq!(
        (fa.served, fb.served),
        (20, 20),
        "after restart: {fa:?} {fb:?}"
    );
    report.push(("restarted", fa, fb));

    redis.freeze();
    let (fa, fb) = load(&a, &b, &t, 40).await;
    report.push(("frozen", fa, fb));
    redis.thaw();
    until_recovered(&a, &t).await;
    until_recovered(&b, &t).await;
    let (fa, fb) = load(&a, &b, &t, 40).await;
    report.push(("thawed", fa, fb));

    println!("phase          | A served refused failed slowest | B served refused failed slowest");
    for (phase, fa, fb) in &report {
        println!(
            "{phase:<14} | {:>8} {:>7} {:>6} {:>6}ms | {:>8} {:>7} {:>6} {:>6}ms",
            fa.served,
            fa.refused,
            fa.failed,
            fa.slowest.as_millis(),
            fb.served,
            fb.refused,
            fb.failed,
            fb.slowest.as_millis()
        );
    }
    for (phase, fa, fb) in &report {
        assert_eq!(
            fa.failed + fb.failed,
            0,
            "{phase}: calls failed or took over 10 s"
        );
    }
    let (_, frozen_a, frozen_b) = &report[3];
    assert_eq!(frozen_a.served, 20, "frozen: A fails open: {frozen_a:?}");
    assert_eq!(frozen_b.refused, 20, "frozen: B fails closed: {frozen_b:?}");
    let (_, thawed_a, thawed_b) = &report[4];
    assert_eq!((thawed_a.served, thawed_b.served), (20, 20));
    for e in [&a, &b] {
        assert!(e.metric("moodle_edge_ws_limit_store_fallbacks_total").await >= 2.0);
        let errors = e
            .metric(&series(
                "moodle_edge_ws_limit_store_errors_total",
                &[("kind", "timeout")],
            ))
            .await;
        assert!(errors >= 1.0, "the freeze shows as timeouts");
    }
    assert!(
        a.metric(&series(
            "moodle_edge_ws_limit_fallback_checks_total",
            &[("policy", "local")]
        ))
        .await
            >= 40.0
    );
    assert_no_panic(&[&a, &b]);
}
