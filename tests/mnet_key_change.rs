//! A peer's changed key, under each `on_key_change` policy: offered by keyswap, and fetched
//! from the peer's /mnet/publickey.php (a real HTTP server on 127.0.0.1 started here) when a
//! call's signature fails. PHP seals and signs the calls as a Moodle peer does. `hold` keeps
//! the pinned key (the new one saved as `.offered`, counted as held); `accept` writes the
//! peer's own key over its cert_file and uses it at once, but never a key a keyswap merely
//! offered (keyswap is unauthenticated). Removing the policy (accepting always, or never, or
//! what keyswap offers) fails one of these tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod mnet_common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mnet_common::*;
use moodle_edge::internals::mnet::config::{KeyChangePolicy, MnetConfig};
use moodle_edge::internals::mnet::inbound::{self, Decision};
use moodle_edge::internals::mnet::MnetState;
use moodle_edge::internals::store::{MemoryStore, Store};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn keyswap(wwwroot: &str, pem: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>system/keyswap</methodName><params>\
         <param><value><string>{wwwroot}</string></value></param><param><value><string>{pem}\
         </string></value></param><param><value><string>moodle</string></value></param>\
         </params></methodCall>"
    )
    .into_bytes()
}

/// A call sealed to the site by PHP, signed with `key`, naming `wwwroot`.
fn call_signed_by(keys: &Keys, key: &Pair, wwwroot: &str) -> Vec<u8> {
    php(
        &[
            "call",
            key.key.to_str().unwrap(),
            wwwroot,
            keys.site.cert.to_str().unwrap(),
            "system/listMethods",
        ],
        b"",
        &[],
    )
}

fn outcome(d: &Decision) -> &'static str {
    match d {
        Decision::Forward { .. } => "forwarded",
        Decision::Answer { outcome, .. } => outcome,
    }
}

fn with_policy(mut cfg: MnetConfig, policy: KeyChangePolicy, wwwroot: &str) -> MnetConfig {
    cfg.peers[0].on_key_change = policy;
    cfg.peers[0].wwwroot = wwwroot.into();
    cfg
}

fn changes(st: &MnetState, wwwroot: &str, action: &str) -> u64 {
    st.metrics
        .key_changes
        .with_label_values(&[wwwroot, action])
        .get()
}

fn pinned(st: &MnetState) -> String {
    st.peers
        .iter()
        .next()
        .unwrap()
        .cert
        .load()
        .fingerprint
        .clone()
}

#[test]
fn a_key_offered_by_keyswap_is_held_for_the_operator_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let new_pem = std::fs::read_to_string(&keys.other.cert).unwrap();
    let old_pem = std::fs::read_to_string(&keys.peer.cert).unwrap();
    let base = mnet_config(&keys, None, &["system/listMethods"]);
    assert_eq!(
        base.peers[0].on_key_change,
        KeyChangePolicy::Hold,
        "hold is the default"
    );

    // The pinned key stays; the offered one is saved for the operator and counted.
    let st = state(&base);
    let before = pinned(&st);
    let d = inbound::check(&st, IP, &keyswap(PEER, &new_pem), true, now())
        .err()
        .unwrap();
    assert_eq!(outcome(&d), "keyswap");
    assert_eq!(pinned(&st), before);
    assert_eq!(changes(&st, PEER, "held"), 1);
    assert_eq!(changes(&st, PEER, "accepted"), 0);
    assert_eq!(std::fs::read_to_string(&keys.peer.cert).unwrap(), old_pem);
    let offered = keys.peer.cert.with_extension("pem.offered");
    assert!(std::fs::read_to_string(&offered)
        .unwrap()
        .contains(new_pem.lines().nth(1).unwrap()));
    let by_new_key = call_signed_by(&keys, &keys.other, PEER);
    let d = inbound::check(&st, IP, &by_new_key, true, now())
        .err()
        .unwrap();
    assert_eq!(outcome(&d), "bad_signature", "a held key signs nothing");
    let _ = inbound::check(&st, IP, &keyswap(PEER, &old_pem), true, now());
    assert_eq!(
        changes(&st, PEER, "held"),
        1,
        "the pinned key offered is no change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_accept_a_keyswap_key_is_confirmed_from_the_peer_never_taken_as_offered() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let new_pem = std::fs::read_to_string(&keys.other.cert).unwrap();
    let old_pem = std::fs::read_to_string(&keys.peer.cert).unwrap();
    let (url, served, hits) = publickey_server(old_pem.clone());
    let store = Store::Memory(MemoryStore::new(100));
    let cfg = with_policy(
        mnet_config(&keys, None, &["system/listMethods"]),
        KeyChangePolicy::Accept,
        &url,
    );

    // Anyone can send a keyswap naming the peer: the key it offers is not the peer's (the
    // peer still serves its pinned one), so nothing changes and the planted key signs nothing.
    let st = state(&cfg);
    let before = pinned(&st);
    let d = inbound::decide(&st, &store, IP, &keyswap(&url, &new_pem), true, now()).await;
    assert_eq!(outcome(&d), "keyswap");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the peer's key was fetched to confirm"
    );
    assert_eq!(pinned(&st), before);
    assert_eq!(changes(&st, &url, "accepted"), 0);
    let by_new_key = call_signed_by(&keys, &keys.other, &url);
    let d = inbound::check(&st, IP, &by_new_key, true, now())
        .err()
        .unwrap();
    assert_eq!(outcome(&d), "bad_signature", "a planted key signs nothing");

    // The peer really rotated: its publickey.php serves the new key, which is accepted,
    // written over cert_file (a reload keeps it) and used at once.
    *served.lock().unwrap() = new_pem.clone();
    let st = state(&cfg);
    let d = inbound::decide(&st, &store, IP, &keyswap(&url, &new_pem), true, now()).await;
    assert_eq!(outcome(&d), "keyswap");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_ne!(pinned(&st), before);
    assert_eq!(changes(&st, &url, "accepted"), 1);
    assert!(std::fs::read_to_string(&keys.peer.cert)
        .unwrap()
        .contains(new_pem.lines().nth(1).unwrap()));
    assert!(
        inbound::check(&st, IP, &by_new_key, true, now()).is_ok(),
        "the accepted key verifies the peer's calls"
    );
    let old_call = php(
        &[
            "call",
            keys.peer.key.to_str().unwrap(),
            &url,
            keys.site.cert.to_str().unwrap(),
            "system/listMethods",
        ],
        b"",
        &[],
    );
    let d = inbound::check(&st, IP, &old_call, true, now())
        .err()
        .unwrap();
    assert_eq!(
        outcome(&d),
        "bad_signature",
        "the replaced key no longer does"
    );
}

/// Serves the text in the returned slot at /mnet/publickey.php on 127.0.0.1 for as long as
/// the test runs; counts the requests.
fn publickey_server(pem: String) -> (String, Arc<Mutex<String>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(Mutex::new(pem));
    let (counted, text) = (hits.clone(), served.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let body = if head.starts_with(b"GET /mnet/publickey.php ") {
                text.lock().unwrap().clone()
            } else {
                String::new()
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, served, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_signature_fetches_the_peers_key_once_and_applies_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let new_pem = std::fs::read_to_string(&keys.other.cert).unwrap();
    let (url, _, hits) = publickey_server(new_pem.clone());
    let store = Store::Memory(MemoryStore::new(100));
    let base = mnet_config(&keys, None, &["system/listMethods"]);

    // hold: fetched and held; the call stays refused; a second failure within the interval
    // fetches nothing (forged calls cannot make the proxy fetch at will).
    let st = state(&with_policy(base.clone(), KeyChangePolicy::Hold, &url));
    let call = call_signed_by(&keys, &keys.other, &url);
    let d = inbound::decide(&st, &store, IP, &call, true, now()).await;
    assert_eq!(outcome(&d), "bad_signature");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(changes(&st, &url, "held"), 1);
    let d = inbound::decide(&st, &store, IP, &call, true, now()).await;
    assert_eq!(outcome(&d), "bad_signature");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "refetched within the interval"
    );

    // accept: fetched, adopted, and the very call that failed passes.
    let st = state(&with_policy(base, KeyChangePolicy::Accept, &url));
    let call = call_signed_by(&keys, &keys.other, &url);
    let d = inbound::decide(&st, &store, IP, &call, true, now()).await;
    assert_eq!(outcome(&d), "forwarded");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(changes(&st, &url, "accepted"), 1);
    assert!(std::fs::read_to_string(&keys.peer.cert)
        .unwrap()
        .contains(new_pem.lines().nth(1).unwrap()));
}
