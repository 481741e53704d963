//! The MNet inbound path per 2 KB call (open the seal, verify the signature, check the call,
//! re-sign and re-seal Moodle's 2 KB answer; the replay cache's store write excluded) beside
//! the raw RSA and RC4 operations the same path needs, and beside PHP doing the same envelope
//! work (tests/mnet_php/bench.php) in the same run. Target: within 1.3x of the primitives.
//!
//! Run: `cargo bench --bench mnet` (needs php-cli; RC4 through the bench's own OPENSSL_CONF).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use rc4::consts::U16;
use rc4::{KeyInit, Rc4, StreamCipher};

use moodle_edge::internals::config::units::{Duration, Size};
use moodle_edge::internals::mnet::config::{
    KeyChangePolicy, KeyswapPolicy, MnetConfig, MnetPeerConfig,
};
use moodle_edge::internals::mnet::keys::{self, Subject};
use moodle_edge::internals::mnet::metrics::MnetMetrics;
use moodle_edge::internals::mnet::xmlrpc::{MethodCall, Value};
use moodle_edge::internals::mnet::{client, inbound, MnetState};

const SITE: &str = "https://site.example";
const PEER: &str = "https://peer.example";

fn write_pair(dir: &Path, name: &str, wwwroot: &str) {
    let pair = keys::generate(
        &Subject {
            wwwroot,
            organization: "Bench",
            country: "NZ",
            locality: "Wellington",
            email: "noreply@example.invalid",
        },
        28,
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), &pair.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), pair.key_pem().unwrap()).unwrap();
}

fn state(dir: &Path, me: &str, my_wwwroot: &str, them: &str, their_wwwroot: &str) -> MnetState {
    let cfg = MnetConfig {
        cert_file: dir.join(format!("{me}.pem")),
        key_file: dir.join(format!("{me}.key")),
        key_history_dir: None,
        max_clock_skew: Duration::from_secs(60),
        replay_ttl: None,
        replay_key: Default::default(),
        max_message_size: Size(1 << 20),
        max_xml_depth: 32,
        keyswap: KeyswapPolicy::Peers,
        expiry_warning_days: 7,
        peers: vec![MnetPeerConfig {
            wwwroot: their_wwwroot.into(),
            cert_file: dir.join(format!("{them}.pem")),
            allow: vec!["system/*".into()],
            networks: vec![],
            on_key_change: KeyChangePolicy::Hold,
        }],
    };
    let metrics = MnetMetrics::register(&prometheus::Registry::new()).unwrap();
    MnetState::build(&cfg, my_wwwroot, Arc::new(metrics)).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "site", SITE);
    write_pair(dir.path(), "peer", PEER);
    let site = state(dir.path(), "site", SITE, "peer", PEER);
    let peer = state(dir.path(), "peer", PEER, "site", SITE);
    let to_site = peer.peers.get(SITE).unwrap().clone();
    let call = MethodCall {
        method: "system/listMethods".into(),
        params: vec![Value::String("x".repeat(1800))],
    };
    let body = client::seal_call(&peer, &to_site, &call, now()).unwrap();
    let answer_xml = format!(
        "<?xml version=\"1.0\"?><methodResponse><params><param><value><string>{}</string></value></param></params></methodResponse>",
        "y".repeat(1900)
    );
    let moodle = client::sign_message(&site, answer_xml.as_bytes(), now()).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // The primitives on the same sizes: RSA-2048 private decrypt of the wrapped key, RC4 over
    // the sealed call, SHA-1 verify over the call, SHA-1 sign over the answer, RSA public
    // encrypt of a new key, RC4 over the sealed answer.
    let site_key = &site.current.key;
    let peer_cert = site.peers.get(PEER).unwrap().cert.load_full();
    let peer_pub = &peer_cert.key;
    let peer_key =
        PKey::private_key_from_pem(&std::fs::read(dir.path().join("peer.key")).unwrap()).unwrap();
    let rsa_site = site_key.rsa().unwrap();
    let rsa_peer_pub = site.peers.get(PEER).unwrap().cert.load().key.rsa().unwrap();
    let mut wrapped = vec![0u8; 256];
    rsa_site
        .public_encrypt(&[7u8; 16], &mut wrapped, Padding::PKCS1)
        .unwrap();
    let payload = moodle_edge::internals::mnet::xmlrpc::write_call(&call).into_bytes();
    let mut signer = Signer::new(MessageDigest::sha1(), &peer_key).unwrap();
    signer.update(&payload).unwrap();
    let call_sig = signer.sign_to_vec().unwrap();
    let sealed_len = body.len() * 3 / 4;

    let mut group = c.benchmark_group("mnet_inbound_2KB");
    group.bench_function("gateway_path", |b| {
        b.iter(|| {
            let Ok(checked) = inbound::check(&site, ip, body.as_bytes(), true, now()) else {
                panic!("refused");
            };
            inbound::answer(
                &site,
                &checked.pending,
                http::StatusCode::OK,
                moodle.as_bytes(),
                now(),
            )
        })
    });
    group.bench_function("primitives", |b| {
        let mut out = vec![0u8; 256];
        let mut buf = vec![0u8; sealed_len];
        b.iter(|| {
            rsa_site
                .private_decrypt(&wrapped, &mut out, Padding::PKCS1)
                .unwrap();
            let mut rc = Rc4::<U16>::new_from_slice(&out[..16]).unwrap();
            rc.apply_keystream(&mut buf);
            let mut v = Verifier::new(MessageDigest::sha1(), peer_pub).unwrap();
            v.update(&payload).unwrap();
            assert!(v.verify(&call_sig).unwrap());
            let mut s = Signer::new(MessageDigest::sha1(), site_key).unwrap();
            s.update(answer_xml.as_bytes()).unwrap();
            let sig = s.sign_to_vec().unwrap();
            let mut w = vec![0u8; 256];
            rsa_peer_pub
                .public_encrypt(&[9u8; 16], &mut w, Padding::PKCS1)
                .unwrap();
            let mut rc = Rc4::<U16>::new_from_slice(&[9u8; 16]).unwrap();
            rc.apply_keystream(&mut buf);
            sig
        })
    });
    group.finish();

    // PHP doing the same envelope work, once, in this run.
    let php = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mnet_php");
    let out = std::process::Command::new("php")
        .arg(php.join("bench.php"))
        .arg(dir.path().join("site.key"))
        .arg(dir.path().join("peer.pem"))
        .arg(dir.path().join("peer.key"))
        .arg(dir.path().join("site.pem"))
        .arg("300")
        .env("OPENSSL_CONF", php.join("openssl-legacy.cnf"))
        .output()
        .expect("php is missing: scripts/install-test-deps.sh installs php-cli");
    println!(
        "mnet_inbound_2KB/php_same_envelope_work: median {} us per call{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        if out.status.success() {
            ""
        } else {
            " (php failed)"
        }
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
