//! HTTP/2 abuse, short form (bench/h2_abuse.sh is the long one): tests/h2_abuse/abuse.py
//! attacks a TLS h2 listener and an h2c listener, each attack for a bounded time, with rapid
//! reset, a CONTINUATION flood, SETTINGS and PING floods, zero-window streams and oversized
//! header lists, while a normal client keeps asking for a page. The proxy must keep serving
//! that client, stay within a stated memory bound, and end the flooding connections (rapid
//! reset, CONTINUATION, SETTINGS, PING). Zero-window streams and oversized header lists are
//! refused or held per stream within the limits; docs/hardening.md has the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Growth of the proxy's RSS over its pre-attack size that no attack may exceed, with the
/// default `server.http2` limits and two attacking threads.
const RSS_BOUND_KIB: i64 = 64 * 1024;

#[test]
fn http2_abuse_is_contained_and_normal_clients_keep_being_served() {
    let up = Upstream::start();
    up.route("/large", Reply::pattern(4 << 20));
    let proxy = Proxy::start(&up.url(), |c, dir| {
        let (crt, key, _) = write_cert(dir, "site", &["lms.test"]);
        let plain = c["server"]["listen"][0].clone();
        c["server"]["listen"] = json!([
            plain,
            {
                "addr": format!("127.0.0.1:{}", free_port()),
                "tls": { "certificates": [ { "cert_file": crt, "key_file": key } ] },
            },
        ]);
    });
    proxy.wait_ready();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2_abuse/abuse.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--target", &format!("h2c=h2c:{}", proxy.addrs[0])])
        .args(["--target", &format!("tls=tls:{}", proxy.addrs[1])])
        .args(["--pid", &proxy.pid().to_string(), "--seconds", "1.0"])
        .output()
        .expect("python3 is not installed: run scripts/install-test-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "abuse.py failed (is the h2 package installed? scripts/install-test-deps.sh):\n{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(rows.len(), 12, "two targets x six attacks:\n{stdout}");
    for row in &rows {
        eprintln!("{row}");
        let what = format!("{} {}", row["target"], row["attack"]);
        let (total, ok) = (
            row["normal_requests"].as_i64().unwrap(),
            row["normal_ok"].as_i64().unwrap(),
        );
        assert!(
            total > 0,
            "{what}: the normal client got nothing done: {row}"
        );
        // Zero-window streams are held, each with an upstream request (docs/hardening.md, "What
        // is left"): on a loaded machine the in-process upstream's accept queue can then turn a
        // normal request into a 502, so that attack is held to 75%, every other one to 90%.
        let floor = if row["attack"] == "zero_window" {
            75
        } else {
            90
        };
        assert!(
            ok * 100 >= total * floor,
            "{what}: the normal client's success rate fell under {floor}%: {row}"
        );
        let growth =
            row["rss_peak_kib"].as_i64().unwrap() - row["rss_baseline_kib"].as_i64().unwrap();
        assert!(
            growth <= RSS_BOUND_KIB,
            "{what}: RSS grew by {growth} KiB: {row}"
        );
        if matches!(
            row["attack"].as_str(),
            Some("rapid_reset" | "continuation" | "settings_flood" | "ping_flood")
        ) {
            assert!(
                row["attacker_closed"].as_i64().unwrap() >= 1,
                "{what}: the abusive connections were never closed: {row}"
            );
        }
    }
    let mut proxy = proxy;
    proxy.assert_running();
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}
