//! The store against a real redis-server (Debian's), started on a free loopback port for the
//! test and stopped by PID at the end; and `/readyz` following the store's health.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use moodle_edge::store::config::{StoreBackend, StoreConfig};
use moodle_edge::store::Store;
use serde_json::json;

/// A redis-server of our own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A missing redis-server fails the test: scripts/install-test-deps.sh installs it.
    fn start() -> Redis {
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "redis-server is not installed: run scripts/install-test-deps.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--requirepass")
            .arg("s3cret-for-tests")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        wait_for("redis-server to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        redis
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn store_config(port: u16, password_file: std::path::PathBuf) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        redis_url: format!("redis://127.0.0.1:{port}/0"),
        redis_key_prefix: "moodle-edge-test:".into(),
        redis_password_file: Some(password_file),
    }
}

#[tokio::test]
async fn redis_store_sets_gets_expires_and_refuses_replays() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "s3cret-for-tests\n").unwrap();
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

#[tokio::test]
async fn a_wrong_password_is_an_error_not_a_panic() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "wrong").unwrap();
    let store = Store::build(&store_config(redis.port, pw)).unwrap();
    assert!(store.ping().await.is_err());
}

#[test]
fn readyz_follows_the_redis_store() {
    let mut redis = Redis::start();
    let up = Upstream::start();
    let port = redis.port;
    let proxy = Proxy::start(&up.url(), |c, dir| {
        let pw = dir.join("redis-password");
        std::fs::write(&pw, "s3cret-for-tests").unwrap();
        c["store"] = json!({
            "backend": "redis",
            "redis_url": format!("redis://127.0.0.1:{port}/0"),
            "redis_password_file": pw,
        });
    });
    wait_for("ready with redis up", Duration::from_secs(10), || {
        proxy
            .admin_get("/readyz")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    redis.stop();
    wait_for(
        "not ready with redis down",
        Duration::from_secs(15),
        || match proxy.admin_get("/readyz") {
            Ok(r) if r.status == 503 => {
                let v = r.json();
                v["checks"]
                    .as_array()
                    .map(|checks| {
                        checks
                            .iter()
                            .any(|c| c["name"] == "store" && c["ok"] == false)
                            && checks
                                .iter()
                                .any(|c| c["name"] == "upstream" && c["ok"] == true)
                    })
                    .unwrap_or(false)
            }
            _ => false,
        },
    );
    assert!(
        !proxy.output().contains("s3cret-for-tests"),
        "the password is never logged"
    );
}
