//! MNet envelopes against PHP's openssl functions, both ways, without a server: PHP seals and
//! signs as a Moodle peer does and the gateway opens and verifies; the gateway signs and seals
//! and PHP opens and verifies; the 7025 old-key answer; Moodle's signed answer re-sealed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod mnet_common;

use std::net::{IpAddr, Ipv4Addr};

use mnet_common::*;
use moodle_edge::internals::mnet::client;
use moodle_edge::internals::mnet::inbound::{self, Decision};
use moodle_edge::internals::mnet::xmlrpc::{MethodCall, Value};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn php_sealed_call_is_opened_verified_and_forwarded_as_php_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let st = state(&mnet_config(&keys, None, &["system/listMethods"]));
    let body = php_call(&keys, "system/listMethods", &["a & b"], &[]);
    let checked = match inbound::check(&st, IP, &body, true, now()) {
        Ok(c) => c,
        Err(_) => panic!("refused a good call"),
    };
    assert_eq!(checked.pending.method, "system/listMethods");
    // What goes to Moodle is the peer's signedMessage, which PHP's openssl_verify accepts.
    let seen = php_open(&keys.site.key, &keys.peer.cert, &checked.signed_xml);
    assert_eq!(seen["signed"], true);
    assert_eq!(seen["encrypted"], false);
    assert_eq!(seen["verified"], true);
    assert!(seen["payload"]
        .as_str()
        .unwrap()
        .contains("<string>a &amp; b</string>"));
}

#[test]
fn gateway_sealed_call_is_opened_and_verified_by_php() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let st = state(&mnet_config(&keys, None, &[]));
    let peer = st.peers.get(PEER).unwrap().clone();
    let call = MethodCall {
        method: "system/listMethods".into(),
        params: vec![Value::String("x<y".into()), Value::Int(5)],
    };
    let body = client::seal_call(&st, &peer, &call, now()).unwrap();
    let seen = php_open(&keys.peer.key, &keys.site.cert, body.as_bytes());
    assert_eq!(seen["encrypted"], true);
    assert_eq!(seen["verified"], true);
    assert_eq!(seen["wwwroot"], SITE);
    assert!(seen["payload"]
        .as_str()
        .unwrap()
        .contains("<methodName>system/listMethods</methodName>"));
}

#[test]
fn moodle_answer_is_resigned_and_sealed_so_php_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let st = state(&mnet_config(&keys, None, &["system/listMethods"]));
    let body = php_call(&keys, "system/listMethods", &[], &[]);
    let Ok(checked) = inbound::check(&st, IP, &body, true, now()) else {
        panic!("refused a good call");
    };
    // Moodle signs its answer (the request reached it signed, unencrypted).
    let xmlrpc = "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><array><data><value><string>system/listMethods</string></value></data></array></value></param></params></methodResponse>";
    let moodle = php(
        &["sign", keys.site.key.to_str().unwrap(), SITE],
        xmlrpc.as_bytes(),
        &[],
    );
    let (sealed, outcome) =
        inbound::answer(&st, &checked.pending, http::StatusCode::OK, &moodle, now());
    assert_eq!(outcome, "forwarded");
    let seen = php_open(&keys.peer.key, &keys.site.cert, &sealed);
    assert_eq!(seen["encrypted"], true);
    assert_eq!(seen["verified"], true);
    assert_eq!(seen["payload"], xmlrpc);
    assert!(seen["timestamp"].as_i64().unwrap() <= now());
}

#[test]
fn message_sealed_to_an_old_key_gets_7025_with_the_current_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let old = php_keygen(dir.path(), "old", SITE);
    let history = dir.path().join("history");
    std::fs::create_dir(&history).unwrap();
    std::fs::write(history.join("old.pem"), moodle_form(&old)).unwrap();
    let st = state(&mnet_config(&keys, Some(history), &["system/listMethods"]));
    let body = php_call_to(&keys, &old.cert, "system/listMethods", &[], &[]);
    let answer = match inbound::check(&st, IP, &body, true, now()) {
        Err(Decision::Answer { body, outcome, .. }) => {
            assert_eq!(outcome, "old_key");
            body
        }
        _ => panic!("an old-key message must be answered 7025 at the edge"),
    };
    // Signed with the old key (the one the peer knows), sealed to the peer.
    let seen = php_open(&keys.peer.key, &old.cert, &answer);
    assert_eq!(seen["verified"], true);
    let payload = seen["payload"].as_str().unwrap();
    assert!(payload.contains("<int>7025</int>"), "{payload}");
    let current = std::fs::read_to_string(&keys.site.cert).unwrap();
    let first_line = current.lines().nth(1).unwrap();
    assert!(
        payload.contains(first_line),
        "the fault carries the current certificate"
    );
}

#[test]
fn answer_signed_by_a_drifted_moodle_key_is_resigned_with_the_proxy_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let st = state(&mnet_config(&keys, None, &["system/listMethods"]));
    let body = php_call(&keys, "system/listMethods", &[], &[]);
    let Ok(checked) = inbound::check(&st, IP, &body, true, now()) else {
        panic!("refused a good call");
    };
    let xmlrpc = "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><string>ok</string></value></param></params></methodResponse>";
    // Moodle rotated its pair alone: its answer is signed by a key the peer does not know.
    let moodle = php(
        &["sign", keys.other.key.to_str().unwrap(), SITE],
        xmlrpc.as_bytes(),
        &[],
    );
    let (sealed, _) = inbound::answer(&st, &checked.pending, http::StatusCode::OK, &moodle, now());
    let seen = php_open(&keys.peer.key, &keys.site.cert, &sealed);
    assert_eq!(
        seen["verified"], true,
        "re-signed with the proxy's (published) key"
    );
    assert_eq!(seen["payload"], xmlrpc);
    // An error page instead of an MNet answer becomes a sealed fault 712.
    let (sealed, outcome) = inbound::answer(
        &st,
        &checked.pending,
        http::StatusCode::BAD_GATEWAY,
        b"<html>oops</html>",
        now(),
    );
    assert_eq!(outcome, "upstream_error");
    let seen = php_open(&keys.peer.key, &keys.site.cert, &sealed);
    assert!(seen["payload"].as_str().unwrap().contains("<int>712</int>"));
}
