//! The MNet gateway in the real binary, between PHP peers and a PHP stand-in Moodle: a good
//! call goes through (opened, verified, forwarded signed and unencrypted from the proxy's
//! address, Moodle's answer re-sealed for the peer), and every attack in the bar is
//! refused at the edge with its fault while nothing reaches Moodle.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

#[path = "common/mod.rs"]
mod common;
mod mnet_common;

use std::net::SocketAddr;

use common::{roundtrip, Proxy, RawResponse};
use mnet_common::*;
use serde_json::json;

fn post(addr: SocketAddr, path: &str, body: &[u8]) -> RawResponse {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: lms.test\r\nContent-Type: text/xml\r\nX-Forwarded-For: 10.9.9.9\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    roundtrip(addr, &req)
}

struct Site {
    dir: tempfile::TempDir,
    keys: Keys,
    old: Pair,
    moodle: MoodleStandIn,
    proxy: Proxy,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let old = php_keygen(dir.path(), "old", SITE);
    let walled = php_keygen(dir.path(), "walled", "https://walled.example");
    let history = dir.path().join("history");
    std::fs::create_dir(&history).unwrap();
    std::fs::write(history.join("old.pem"), moodle_form(&old)).unwrap();
    let moodle = MoodleStandIn::start(dir.path(), &keys, SITE);
    let (site_cert, site_key, peer_cert) = (
        keys.site.cert.clone(),
        keys.site.key.clone(),
        keys.peer.cert.clone(),
    );
    let proxy = Proxy::start(&moodle.url(), |cfg, _| {
        cfg["moodle"]["wwwroot"] = json!(SITE);
        cfg["log"] = json!({ "access": { "format": "json" } });
        cfg["mnet"] = json!({
            "cert_file": site_cert,
            "key_file": site_key,
            "key_history_dir": history,
            "max_clock_skew": "60s",
            "max_message_size": "64KiB",
            "peers": [
                { "wwwroot": PEER, "cert_file": peer_cert,
                  "allow": ["system/listMethods", "auth/mnet/auth.php/user_authorise"] },
                { "wwwroot": "https://walled.example", "cert_file": walled.cert,
                  "allow": ["system/listMethods"], "networks": ["10.0.0.0/8"] },
            ],
        });
    });
    let mut site = Site {
        dir,
        keys,
        old,
        moodle,
        proxy,
    };
    site.proxy.wait_bound();
    site
}

impl Site {
    fn send(&self, body: &[u8]) -> RawResponse {
        post(self.proxy.addr(), "/mnet/xmlrpc/server.php", body)
    }

    /// Sends `body`, expects a plain fault `code`, and checks Moodle saw nothing new.
    fn refused_plain(&self, what: &str, body: &[u8], code: i64) {
        let before = self.moodle.calls().len();
        let r = self.send(body);
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(
            fault_code(&r.body),
            Some(code),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(self.moodle.calls().len(), before, "{what} reached Moodle");
    }

    /// Sends `body`, expects a fault `code` sealed to the peer and signed by the site.
    fn refused_sealed(&self, what: &str, body: &[u8], code: i64) {
        let before = self.moodle.calls().len();
        let r = self.send(body);
        assert_eq!(r.status, 200, "{what}");
        let seen = php_open(&self.keys.peer.key, &self.keys.site.cert, &r.body);
        assert_eq!(seen["encrypted"], true, "{what}");
        assert_eq!(seen["verified"], true, "{what}");
        let payload = seen["payload"].as_str().unwrap();
        assert_eq!(
            fault_code(payload.as_bytes()),
            Some(code),
            "{what}: {payload}"
        );
        assert_eq!(self.moodle.calls().len(), before, "{what} reached Moodle");
    }
}

#[test]
fn good_call_passes_and_the_answer_is_sealed_for_the_peer() {
    let s = site();
    let body = php_call(&s.keys, "system/listMethods", &[], &[]);
    let r = s.send(&body);
    assert_eq!(r.status, 200);
    let seen = php_open(&s.keys.peer.key, &s.keys.site.cert, &r.body);
    assert_eq!(seen["encrypted"], true);
    assert_eq!(seen["verified"], true, "{seen}");
    assert_eq!(seen["wwwroot"], SITE);
    assert!(seen["payload"]
        .as_str()
        .unwrap()
        .contains("moodle:system/listMethods"));
    assert!(seen["timestamp"].as_i64().unwrap() <= now());
    let calls = s.moodle.calls();
    assert_eq!(calls.len(), 1);
    // Signed, not encrypted, from the proxy's address, and no client X-Forwarded-For.
    assert!(calls[0]["head"]
        .as_str()
        .unwrap()
        .contains("<signedMessage>"));
    assert_eq!(calls[0]["remote_addr"], "127.0.0.1");
    assert_eq!(calls[0]["x_forwarded_for"], serde_json::Value::Null);

    // The byte-identical envelope again: a replay.
    s.refused_sealed("byte-identical replay", &body, 7041);
    // The same signed call sealed anew (a new RC4 key, same signature): still a replay.
    let ts = now().to_string();
    let env = [("MNET_TIMESTAMP", ts.as_str())];
    let first = php_call(&s.keys, "auth/mnet/auth.php/user_authorise", &["tok"], &env);
    let again = php_call(&s.keys, "auth/mnet/auth.php/user_authorise", &["tok"], &env);
    assert_ne!(first, again);
    assert_eq!(s.send(&first).status, 200);
    assert_eq!(s.moodle.calls().len(), 2);
    s.refused_sealed("re-sealed replay", &again, 7041);

    // Metrics: the call and the refusals by reason.
    let m = s.proxy.admin_get("/metrics").unwrap().text();
    assert!(
        m.contains("moodle_edge_mnet_refusals_total{reason=\"replay\"} 2"),
        "{m}"
    );
    assert!(m.contains("moodle_edge_mnet_calls_total{method=\"system/listMethods\",outcome=\"forwarded\",peer=\"https://peer.example\"} 1"), "{m}");
}

#[test]
fn forged_stale_and_disallowed_calls_are_refused_at_the_edge() {
    let s = site();
    let k = &s.keys;
    let stale = (now() - 3600).to_string();
    let future = (now() + 3600).to_string();
    let other_key = k.other.key.to_str().unwrap().to_string();
    // Unknown peer: a sender wwwroot nobody configured.
    let mut a = vec![
        "call",
        k.peer.key.to_str().unwrap(),
        "https://stranger.example",
        k.site.cert.to_str().unwrap(),
        "system/listMethods",
    ];
    s.refused_plain("unknown peer", &php(&a, b"", &[]), 7020);
    // Tampered after signing, signed by another key, a signed wwwroot that differs.
    s.refused_sealed(
        "tampered",
        &php_call(k, "system/listMethods", &[], &[("MNET_TAMPER", "1")]),
        710,
    );
    s.refused_sealed(
        "another key",
        &php_call(
            k,
            "system/listMethods",
            &[],
            &[("MNET_SIGN_KEY", &other_key)],
        ),
        710,
    );
    s.refused_sealed(
        "wrong wwwroot",
        &php_call(
            k,
            "system/listMethods",
            &[],
            &[("MNET_INNER_WWWROOT", "https://evil.example")],
        ),
        7020,
    );
    // Timestamps outside max_clock_skew.
    s.refused_sealed(
        "stale",
        &php_call(k, "system/listMethods", &[], &[("MNET_TIMESTAMP", &stale)]),
        7040,
    );
    s.refused_sealed(
        "future",
        &php_call(k, "system/listMethods", &[], &[("MNET_TIMESTAMP", &future)]),
        7040,
    );
    // A method outside the peer's allow list.
    s.refused_sealed(
        "disallowed method",
        &php_call(k, "system/listServices", &[], &[]),
        707,
    );
    // A peer whose networks do not hold the caller (127.0.0.1).
    let walled_key = s.dir.path().join("walled.key");
    a = vec![
        "call",
        walled_key.to_str().unwrap(),
        "https://walled.example",
        k.site.cert.to_str().unwrap(),
        "system/listMethods",
    ];
    let walled = php(&a, b"", &[]);
    s.refused_plain("disallowed network", &walled, 7017);
    // A repeated element inside the sealed signedMessage: answered as a seal that does not
    // open (no padding oracle).
    s.refused_plain(
        "repeated inner wwwroot",
        &php_call(k, "system/listMethods", &[], &[("MNET_INNER_DUP", "1")]),
        7023,
    );
    assert!(s.moodle.calls().is_empty());
}

#[test]
fn malformed_oversized_and_unencrypted_messages_are_refused() {
    let s = site();
    let k = &s.keys;
    let good = String::from_utf8(php_call(k, "system/listMethods", &[], &[])).unwrap();
    // A repeated envelope element.
    let repeated = good.replacen(
        "<wwwroot>",
        "<wwwroot>https://evil.example</wwwroot><wwwroot>",
        1,
    );
    s.refused_plain("repeated outer wwwroot", repeated.as_bytes(), 7023);
    // Truncated base64 in the first CipherValue.
    let at = good.find("<CipherValue>").unwrap() + "<CipherValue>".len();
    let mut truncated = good.clone();
    truncated.remove(at);
    s.refused_plain("truncated base64", truncated.as_bytes(), 7023);
    // Oversized (over max_message_size: 64 KiB).
    let big = good.replacen(
        "<wwwroot>",
        &format!("<!-- {} --><wwwroot>", "x".repeat(70_000)),
        1,
    );
    s.refused_plain("oversized", big.as_bytes(), -32700);
    // Deeply nested.
    let deep = format!(
        "<?xml version=\"1.0\"?><encryptedMessage>{}{}</encryptedMessage>",
        "<a>".repeat(500),
        "</a>".repeat(500)
    );
    s.refused_plain("deeply nested", deep.as_bytes(), -32700);
    // An entity-expansion bomb.
    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE e [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>\n<encryptedMessage><wwwroot>&c;</wwwroot></encryptedMessage>";
    s.refused_plain("entity bomb", bomb.as_bytes(), -32700);
    // Unencrypted from outside: a signed message, and a plain call.
    let signed = php(&["sign", k.peer.key.to_str().unwrap(), PEER], b"<?xml version=\"1.0\"?><methodCall><methodName>system/listMethods</methodName></methodCall>", &[]);
    s.refused_plain("signed, unencrypted", &signed, 7021);
    s.refused_plain("plain call", b"<?xml version=\"1.0\"?><methodCall><methodName>system/listMethods</methodName></methodCall>", 7021);
    // Other spellings of the server path never reach Moodle either.
    let before = s.moodle.calls().len();
    let r = post(s.proxy.addr(), "/mnet/xmlrpc/server.php/x", good.as_bytes());
    assert_eq!(fault_code(&r.body), Some(7021));
    let r = post(s.proxy.addr(), "//mnet/xmlrpc/server.php", good.as_bytes());
    assert_eq!(fault_code(&r.body), Some(7021));
    assert_eq!(s.moodle.calls().len(), before);
    assert!(s.moodle.calls().is_empty());
}

#[test]
fn keys_old_key_keyswap_publickey_and_the_cli() {
    let s = site();
    let k = &s.keys;
    // Sealed to the previous certificate: 7025 with the current one, signed with the old key.
    let body = php_call_to(k, &s.old.cert, "system/listMethods", &[], &[]);
    let r = s.send(&body);
    let seen = php_open(&k.peer.key, &s.old.cert, &r.body);
    assert_eq!(seen["verified"], true);
    let payload = seen["payload"].as_str().unwrap();
    assert_eq!(fault_code(payload.as_bytes()), Some(7025));
    let current = std::fs::read_to_string(&k.site.cert).unwrap();
    assert!(payload.contains(current.lines().nth(1).unwrap()));
    assert!(s.moodle.calls().is_empty());

    // Key swap, answered at the edge for a configured peer; refused for a stranger.
    let pem = std::fs::read_to_string(&k.peer.cert).unwrap();
    let swap = |wwwroot: &str| {
        format!("<?xml version=\"1.0\"?><methodCall><methodName>system/keyswap</methodName><params><param><value><string>{wwwroot}</string></value></param><param><value><string>{pem}</string></value></param><param><value><string>moodle</string></value></param></params></methodCall>")
    };
    let r = s.send(swap(PEER).as_bytes());
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains(current.lines().nth(1).unwrap()),
        "{}",
        r.text()
    );
    s.refused_plain(
        "keyswap from a stranger",
        swap("https://stranger.example").as_bytes(),
        7020,
    );
    assert!(s.moodle.calls().is_empty(), "keyswap never reaches Moodle");

    // The public key.
    let r = common::get(s.proxy.addr(), "/mnet/publickey.php", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), current.trim());

    // `mnet call` from the peer's side, through the proxy.
    let peer_dir = s.dir.path().join("peer-cli");
    std::fs::create_dir(&peer_dir).unwrap();
    let mut cfg = common::base_config(&peer_dir, "http://127.0.0.1:9");
    cfg["moodle"]["wwwroot"] = json!(PEER);
    cfg["mnet"] = json!({
        "cert_file": k.peer.cert, "key_file": k.peer.key,
        "peers": [{ "wwwroot": SITE, "cert_file": k.site.cert }],
    });
    let cfg_path = peer_dir.join("config.yaml");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["mnet", "call", SITE, "system/listMethods", "--url"])
        .arg(s.proxy.url("/mnet/xmlrpc/server.php"))
        .arg("--config")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"moodle:system/listMethods\""
    );
    let out = std::process::Command::new(common::BIN)
        .args(["mnet", "peers", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("peer https://site.example"));
}

#[test]
fn import_key_and_keygen_write_pairs_moodle_and_the_proxy_share() {
    let dir = tempfile::tempdir().unwrap();
    let pair = php_keygen(dir.path(), "moodle", SITE);
    let stored = dir.path().join("openssl.txt");
    std::fs::write(&stored, moodle_form(&pair)).unwrap();
    let (cert, key, hist) = (
        dir.path().join("site.pem"),
        dir.path().join("site.key"),
        dir.path().join("old"),
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (c, k, h) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        hist.to_str().unwrap(),
    );
    run(&[
        "mnet",
        "import-key",
        stored.to_str().unwrap(),
        "--cert-out",
        c,
        "--key-out",
        k,
        "--history-dir",
        h,
    ]);
    assert_eq!(
        std::fs::read_to_string(&cert).unwrap().trim(),
        std::fs::read_to_string(&pair.cert).unwrap().trim()
    );
    // Rotation: keygen moves the imported pair into the history.
    let moodle_out = dir.path().join("for-moodle.txt");
    run(&[
        "mnet",
        "keygen",
        "--wwwroot",
        SITE,
        "--cert-out",
        c,
        "--key-out",
        k,
        "--history-dir",
        h,
        "--moodle-out",
        moodle_out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_dir(&hist).unwrap().count(), 1);
    assert!(std::fs::read_to_string(&moodle_out)
        .unwrap()
        .contains("@@@@@@@@"));
    // PHP reads the new certificate as a Moodle peer would.
    let sub = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in", c])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&sub.stdout).contains("CN = https://site.example"));
    // A broken stored value is refused with a clear error.
    std::fs::write(&stored, "not a key").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "mnet",
            "import-key",
            stored.to_str().unwrap(),
            "--cert-out",
            c,
            "--key-out",
            k,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CERT@@@@@@@@KEY"));
}
