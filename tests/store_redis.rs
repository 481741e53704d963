//! The store against a real redis-server (Debian's), started on a free loopback port for the
//! test and stopped by PID at the end; and `/readyz` following the store's health.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;
mod store_common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use moodle_edge::internals::store::config::{StoreBackend, StoreConfig};
use moodle_edge::internals::store::Store;
use serde_json::json;
use store_common::Redis;

fn store_config(port: u16, password_file: std::path::PathBuf) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        redis_url: format!("redis://127.0.0.1:{port}/0"),
        redis_key_prefix: "moodle-edge-test:".into(),
        redis_password_file: Some(password_file),
        ..StoreConfig::default()
    }
}

/// A redis-server with a password and the file holding it (kept while the dir lives).
fn redis_with_password_file() -> (Redis, tempfile::TempDir, std::path::PathBuf) {
    let redis = Redis::start_with_password("s3cret-for-tests");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "s3cret-for-tests\n").unwrap();
    (redis, dir, pw)
}

#[tokio::test]
async fn redis_store_sets_gets_expires_and_refuses_replays() {
    let (redis, _dir, pw) = redis_with_password_file();
    let store = Store::build(&store_config(redis.port, pw)).unwrap();
    store.ping().await.unwrap();
    store
        .set("session:a", b"alice", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get("session:a").await.unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    store.delete("session:a").await.unwrap();
    assert_eq!(store.get("session:a").await.unwrap(), None);

    store
        .set("short", b"x", Duration::from_millis(50))
        .await
        .unwrap();
    // Polled, not slept on: redis expires the key on its own clock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get("short").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "TTL is not honoured by redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(store
        .set_if_absent("nonce:1", b"1", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!store
        .set_if_absent("nonce:1", b"2", Duration::from_secs(60))
        .await
        .unwrap());

    // The prefix keeps the proxy's keys apart from anything else in that database.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "-a",
            "s3cret-for-tests",
            "--no-auth-warning",
            "keys",
            "*",
        ])
        .output()
        .expect("redis-cli is not installed: run scripts/install-test-deps.sh");
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(keys.contains("moodle-edge-test:nonce:1"), "{keys}");
}

/// Two replicas adding to one set at the same instant: every add lands (SADD, not a
/// read-modify-write of a list), the set has a lifetime, and removing its members drops it.
#[tokio::test]
async fn set_adds_from_two_replicas_at_once_all_land() {
    let (redis, _dir, pw) = redis_with_password_file();
    let a = Store::build(&store_config(redis.port, pw.clone())).unwrap();
    let b = Store::build(&store_config(redis.port, pw)).unwrap();
    let adds = (0..100).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .members_add("set:h", &format!("sso:s:{i}"), Duration::from_secs(60))
                .await
        }
    });
    for r in futures_util::future::join_all(adds).await {
        r.unwrap();
    }
    let mut members = b.members("set:h").await.unwrap();
    members.sort();
    members.dedup();
    assert_eq!(members.len(), 100, "an add from one replica was lost");
    let ttl = redis.cli(&["PTTL", "moodle-edge-test:set:h"]);
    let ttl: i64 = ttl.trim().parse().unwrap_or(-1);
    assert!(ttl > 0 && ttl <= 60_000, "the set has its lifetime: {ttl}");
    a.members_remove("set:h", &members).await.unwrap();
    assert!(a.members("set:h").await.unwrap().is_empty());
    assert_eq!(a.get("set:h").await.ok().flatten(), None);
}

/// Logins of one OIDC `sid` at the same instant on two replicas are all ended by the one
/// back-channel logout that names it: none escapes the handle's index.
#[tokio::test]
async fn concurrent_logins_of_one_sid_on_two_replicas_all_end_at_its_logout() {
    use moodle_edge::internals::sso::session::SessionProbe;
    let redis = Redis::start(&[]);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    // No per-replica copies: every check reads Redis, so only the index decides the outcome.
    let a = SessionProbe::redis(&url, Duration::ZERO).unwrap();
    let b = SessionProbe::redis(&url, Duration::ZERO).unwrap();
    let logins = (0..40).map(|i| {
        let probe = if i % 2 == 0 { &a } else { &b };
        probe.login()
    });
    let cookies = futures_util::future::join_all(logins).await;
    assert!(
        cookies.iter().all(|h| !h.is_empty()),
        "every login was stored"
    );
    for h in &cookies {
        assert!(a.check(h).await, "logged in");
    }
    assert_eq!(
        a.end_logins().await.unwrap(),
        40,
        "every login of the sid is indexed"
    );
    for h in &cookies {
        assert!(!b.check(h).await, "a login escaped the back-channel logout");
    }
}

#[tokio::test]
async fn a_wrong_password_is_an_error_not_a_panic() {
    let redis = Redis::start_with_password("s3cret-for-tests");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "wrong").unwrap();
    let store = Store::build(&store_config(redis.port, pw)).unwrap();
    assert!(store.ping().await.is_err());
}

fn store_check(r: &RawResponse) -> Option<(bool, bool)> {
    let v = r.json();
    let checks = v["checks"].as_array()?;
    let store_ok = checks
        .iter()
        .any(|c| c["name"] == "store" && c["ok"] == true);
    let upstream_ok = checks
        .iter()
        .any(|c| c["name"] == "upstream" && c["ok"] == true);
    Some((store_ok, upstream_ok))
}

/// Default policy: a Redis outage leaves /readyz at 200 with the store marked degraded (so a
/// load balancer does not pull every replica at once); `on_error.readiness: unready` makes it 503.
#[test]
fn readyz_reports_a_lost_redis_as_degraded_or_unready() {
    for (policy, down_status) in [("degraded", 200), ("unready", 503)] {
        let mut redis = Redis::start_with_password("s3cret-for-tests");
        let up = Upstream::start();
        let port = redis.port;
        let proxy = Proxy::start(&up.url(), |c, dir| {
            let pw = dir.join("redis-password");
            std::fs::write(&pw, "s3cret-for-tests").unwrap();
            c["store"] = json!({
                "backend": "redis",
                "redis_url": format!("redis://127.0.0.1:{port}/0"),
                "redis_password_file": pw,
                "on_error": { "readiness": policy },
            });
        });
        wait_for("ready with redis up", Duration::from_secs(10), || {
            proxy
                .admin_get("/readyz")
                .map(|r| r.status == 200 && store_check(&r) == Some((true, true)))
                .unwrap_or(false)
        });
        redis.stop();
        wait_for(
            &format!("{policy}: store failing, status {down_status}"),
            Duration::from_secs(15),
            || match proxy.admin_get("/readyz") {
                Ok(r) => r.status == down_status && store_check(&r) == Some((false, true)),
                _ => false,
            },
        );
        // Back without a proxy restart.
        redis.restart();
        wait_for(
            "ready again after redis restart",
            Duration::from_secs(15),
            || {
                proxy
                    .admin_get("/readyz")
                    .map(|r| r.status == 200 && store_check(&r) == Some((true, true)))
                    .unwrap_or(false)
            },
        );
        assert!(
            !proxy.output().contains("s3cret-for-tests"),
            "the password is never logged"
        );
    }
}

/// `rediss://` through rustls with a private CA (`redis_ca_file`), an ACL user
/// (`redis_username`) and its password from a file.
#[tokio::test]
async fn tls_and_an_acl_user_from_files() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = write_cert(certs.path(), "redis", &["127.0.0.1", "localhost"]);
    let redis = Redis::start_tls(&cert, &key, &[]);
    let acl = redis.cli(&[
        "ACL",
        "SETUSER",
        "edge",
        "on",
        ">edge-pass",
        "~moodle-edge-test:*",
        "+@all",
    ]);
    assert!(acl.contains("OK"), "{acl}");
    let pw = certs.path().join("pw");
    std::fs::write(&pw, "edge-pass\n").unwrap();
    let mut cfg = store_config(redis.port, pw);
    cfg.redis_url = format!("rediss://127.0.0.1:{}/0", redis.port);
    cfg.redis_username = Some("edge".into());
    cfg.redis_ca_file = Some(cert.clone());
    let store = Store::build(&cfg).unwrap();
    store.ping().await.unwrap();
    store.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // Without the private CA the server is not trusted: an error, not a panic.
    cfg.redis_ca_file = None;
    let untrusted = Store::build(&cfg).unwrap();
    assert!(untrusted.ping().await.is_err());
    // The wrong user's password is refused.
    cfg.redis_ca_file = Some(cert);
    cfg.redis_username = Some("nobody".into());
    assert!(Store::build(&cfg).unwrap().ping().await.is_err());
}

/// A frozen Redis (SIGSTOP: the socket is open, nothing answers) holds no operation past
/// connect + command timeout; after SIGCONT the same store answers again.
#[tokio::test]
async fn a_frozen_redis_costs_at_most_the_timeout() {
    let redis = Redis::start(&[]);
    let mut cfg = StoreConfig {
        backend: StoreBackend::Redis,
        redis_url: format!("redis://127.0.0.1:{}/0", redis.port),
        ..StoreConfig::default()
    };
    cfg.redis_command_timeout = moodle_edge::internals::config::units::Duration::from_millis(200);
    cfg.redis_connect_timeout = moodle_edge::internals::config::units::Duration::from_millis(200);
    let store = Store::build(&cfg).unwrap();
    store.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    redis.freeze();
    for _ in 0..3 {
        let start = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), store.get("k"))
            .await
            .expect("bounded by the store's own timeouts");
        assert!(r.is_err(), "a frozen redis gives an error");
        println!("frozen get answered in {:?}", start.elapsed());
    }
    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(v)) = store.get("k").await {
            assert_eq!(v, b"v");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store did not recover after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis Sentinel through the redis crate: the store finds the master by name, and after a
/// failover (`SENTINEL FAILOVER`) it writes to the new master without a restart.
#[tokio::test]
async fn sentinel_names_the_master_and_follows_a_failover() {
    let master = Redis::start(&[]);
    let replica = Redis::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "sentinel monitor edge 127.0.0.1 {} 1\nsentinel down-after-milliseconds edge 1000\nsentinel failover-timeout edge 5000\n",
            master.port
        ),
    )
    .unwrap();
    let sentinel_port = store_common::redis_free_port();
    let mut sentinel = std::process::Command::new("redis-server")
        .arg(&conf)
        .args([
            "--sentinel",
            "--port",
            &sentinel_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server --sentinel");
    let sentinel_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &sentinel_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The sentinel learns of the replica from the master's INFO (every 10s at first).
    wait_for(
        "sentinel to see the replica",
        Duration::from_secs(30),
        || sentinel_cli(&["sentinel", "replicas", "edge"]).contains(&replica.port.to_string()),
    );
    let cfg = StoreConfig {
        backend: StoreBackend::Redis,
        redis_url: "redis://127.0.0.1:1/0".into(),
        redis_sentinel: Some(moodle_edge::internals::store::config::SentinelConfig {
            addrs: vec![format!("127.0.0.1:{sentinel_port}")],
            master_name: "edge".into(),
        }),
        ..StoreConfig::default()
    };
    let store = Store::build(&cfg).unwrap();
    store
        .set("before", b"1", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(master.cli(&["get", "moodle-edge:before"]).contains('1'));

    // The sentinel may not know a promotable replica yet (NOGOODSLAVE on a loaded machine):
    // ask again until it accepts, within a deadline.
    let asked = Instant::now() + Duration::from_secs(30);
    let mut out = sentinel_cli(&["sentinel", "failover", "edge"]);
    while !out.contains("OK") && Instant::now() < asked {
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = sentinel_cli(&["sentinel", "failover", "edge"]);
    }
    assert!(out.contains("OK"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    loop {
        if store
            .set("after", b"2", Duration::from_secs(60))
            .await
            .is_ok()
            && replica.cli(&["get", "moodle-edge:after"]).contains('2')
        {
            break;
        }
        failed += 1;
        assert!(Instant::now() < deadline, "no write reached the new master");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("sentinel failover: {failed} failed writes before the new master took them");
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}
