//! Shared harness for the MNet tests (`tests/mnet_*.rs`): PHP peers that do Moodle's envelope
//! work with PHP's openssl functions (`tests/mnet_php/peer.php`, run with the test's own
//! OPENSSL_CONF so RC4 is available; the system's config is never touched), key pairs made by
//! `openssl_csr_sign` as Moodle makes them, and an in-process `MnetState` for library tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use moodle_edge::internals::config::units::{Duration, Size};
use moodle_edge::internals::mnet::config::{
    KeyChangePolicy, KeyswapPolicy, MnetConfig, MnetPeerConfig,
};
use moodle_edge::internals::mnet::metrics::MnetMetrics;
use moodle_edge::internals::mnet::MnetState;

pub const SITE: &str = "https://site.example";
pub const PEER: &str = "https://peer.example";

pub fn php_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mnet_php")
}

/// Runs `php peer.php ARGS` with `stdin`, extra env; panics (naming stderr) on failure. A
/// missing php fails the test: scripts/install-test-deps.sh installs php-cli.
pub fn php(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut cmd = Command::new("php");
    cmd.arg(php_dir().join("peer.php"))
        .args(args)
        .env("OPENSSL_CONF", php_dir().join("openssl-legacy.cnf"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("php is missing: run scripts/install-test-deps.sh (php-cli)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "php {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A certificate and key made by PHP's openssl_csr_new/openssl_csr_sign (Moodle's way).
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn php_keygen(dir: &Path, name: &str, wwwroot: &str) -> Pair {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    php(
        &[
            "keygen",
            wwwroot,
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    Pair { cert, key }
}

/// A key pair as one file in Moodle's stored form, for the key history.
pub fn moodle_form(pair: &Pair) -> String {
    format!(
        "{}@@@@@@@@{}",
        std::fs::read_to_string(&pair.cert).unwrap(),
        std::fs::read_to_string(&pair.key).unwrap()
    )
}

/// The site's and the peer's keys (and the peer's second, unregistered key) in `dir`.
pub struct Keys {
    pub site: Pair,
    pub peer: Pair,
    pub other: Pair,
}

pub fn keys(dir: &Path) -> Keys {
    Keys {
        site: php_keygen(dir, "site", SITE),
        peer: php_keygen(dir, "peer", PEER),
        other: php_keygen(dir, "other", PEER),
    }
}

pub fn mnet_config(keys: &Keys, history: Option<PathBuf>, allow: &[&str]) -> MnetConfig {
    MnetConfig {
        cert_file: keys.site.cert.clone(),
        key_file: keys.site.key.clone(),
        key_history_dir: history,
        max_clock_skew: Duration::from_secs(60),
        replay_ttl: None,
        replay_key: Default::default(),
        max_message_size: Size(256 * 1024),
        max_xml_depth: 32,
        keyswap: KeyswapPolicy::Peers,
        expiry_warning_days: 7,
        peers: vec![MnetPeerConfig {
            wwwroot: PEER.into(),
            cert_file: keys.peer.cert.clone(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            networks: vec![],
            on_key_change: KeyChangePolicy::Hold,
        }],
    }
}

pub fn state(cfg: &MnetConfig) -> MnetState {
    let metrics = MnetMetrics::register(&prometheus::Registry::new()).unwrap();
    MnetState::build(cfg, SITE, Arc::new(metrics)).unwrap()
}

/// PHP's view of a sealed answer: JSON with encrypted, signed, verified, wwwroot, timestamp,
/// payload.
pub fn php_open(key: &Path, sender_cert: &Path, body: &[u8]) -> serde_json::Value {
    let out = php(
        &["open", key.to_str().unwrap(), sender_cert.to_str().unwrap()],
        body,
        &[],
    );
    serde_json::from_slice(&out).unwrap()
}

/// A call as the PHP peer seals it to the site.
pub fn php_call(keys: &Keys, method: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    php_call_to(keys, &keys.site.cert, method, args, env)
}

pub fn php_call_to(
    keys: &Keys,
    recipient: &Path,
    method: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<u8> {
    let mut a = vec![
        "call",
        keys.peer.key.to_str().unwrap(),
        PEER,
        recipient.to_str().unwrap(),
        method,
    ];
    a.extend_from_slice(args);
    php(&a, b"", env)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The stand-in Moodle (`php -S` running tests/mnet_php/moodle.php): verifies the forwarded
/// signedMessage with openssl_verify, checks REMOTE_ADDR against its trusted hosts, answers
/// signed, and logs every call it receives. Killed by PID on drop.
pub struct MoodleStandIn {
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
    child: std::process::Child,
}

impl MoodleStandIn {
    pub fn start(dir: &Path, keys: &Keys, site_wwwroot: &str) -> MoodleStandIn {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join("moodle-calls.jsonl");
        std::fs::write(&log, "").unwrap();
        let child = Command::new("php")
            .arg("-S")
            .arg(addr.to_string())
            .arg(php_dir().join("moodle.php"))
            .env("OPENSSL_CONF", php_dir().join("openssl-legacy.cnf"))
            .env("MNET_LOG", &log)
            .env("MNET_TRUSTED", "127.0.0.1")
            .env("MNET_PEER_CERT", &keys.peer.cert)
            .env("MNET_SITE_KEY", &keys.site.key)
            .env("MNET_SITE_WWWROOT", site_wwwroot)
            .env_remove("PHP_CLI_SERVER_WORKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php is missing: run scripts/install-test-deps.sh (php-cli)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "php -S did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        MoodleStandIn { addr, log, child }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls that reached Moodle, one JSON object each.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for MoodleStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The faultCode of a plain (unsealed) XML-RPC fault, if it is one.
pub fn fault_code(body: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("<name>faultCode</name>")?;
    let rest = &text[at..];
    let start = rest.find("<int>")? + 5;
    let end = rest[start..].find("</int>")? + start;
    rest[start..end].trim().parse().ok()
}
