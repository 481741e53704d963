//! Harness for the SSO tests (`tests/sso_*.rs`, SAML's excepted).
//!
//! * [`Moodle`]: a stand-in Moodle with auth_userkey: `auth_userkey_request_login_url` (token
//!   checked, known users only, one-time keys for 60 s, bound to `user[ip]` or the caller when
//!   IP restriction is on), `/auth/userkey/login.php` (follows `wantsurl` unchecked, as the real
//!   plugin does), `/login/logout.php` (confirmation form with the sesskey, logout with it), and
//!   every other page answering who is logged in.
//! * [`OidcPeer`]: `node tests/peers/oidc/provider.mjs` (oidc-provider v9) or `rogue.mjs`,
//!   started on a free port, killed by PID on drop. A missing `node` or npm install fails.
//! * [`Edge`]: the real binary in front of the stand-in, with an `sso:` section.
//! * [`Browser`]: an HTTP client with a cookie jar (keyed by host, as browsers do) that follows
//!   redirects one by one and submits the provider's HTML forms.
#![allow(dead_code)]

pub mod browser;
pub mod moodle;
#[path = "../common/process.rs"]
#[allow(unused_macros, unused_imports)]
pub mod process;
#[path = "../common/standin.rs"]
pub mod standin;
#[path = "../common/util.rs"]
pub mod util;

#[allow(unused_imports)]
pub use browser::{Browser, Page};
pub use moodle::Moodle;
pub use process::{EdgeProcess, BIN};
pub use standin::StandinServer;
pub use util::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const USERKEY_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const CLIENT_ID: &str = "moodle-edge";
pub const OAUTH2_CLIENT_ID: &str = "moodle-edge-oauth2";
pub const CLIENT_SECRET: &str = "test-client-secret-of-some-length";

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc")
}

/// An OpenID provider process on 127.0.0.1.
pub struct OidcPeer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OidcPeer {
    /// The real oidc-provider, with this edge as its one client.
    pub fn real(edge_port: u16) -> OidcPeer {
        Self::real_with_backchannel(edge_port, None)
    }

    /// The real provider, its back-channel logout going to `bcl` (default: the edge).
    pub fn real_with_backchannel(edge_port: u16, bcl: Option<String>) -> OidcPeer {
        Self::real_with(edge_port, bcl, json!({}))
    }

    /// The real provider with a plain OAuth 2 client too (`OAUTH2_CLIENT_ID`, no openid
    /// scope, GitHub-shaped userinfo at `/api/user`).
    pub fn real_with_oauth2(edge_port: u16) -> OidcPeer {
        let edge = format!("http://127.0.0.1:{edge_port}");
        Self::real_with(
            edge_port,
            None,
            json!({ "oauth2_client": {
                "client_id": OAUTH2_CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [format!("{edge}/auth/oauth2/callback")],
            }}),
        )
    }

    /// The real provider; `extra`'s keys are added to its config (see provider.mjs).
    pub fn real_with(edge_port: u16, bcl: Option<String>, extra: Value) -> OidcPeer {
        let dir = tempfile::tempdir().unwrap();
        let edge = format!("http://127.0.0.1:{edge_port}");
        let mut cfg = json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{edge}/auth/oidc/callback")],
            "post_logout_redirect_uris": [format!("{edge}/auth/login?logged_out=1")],
            "backchannel_logout_uri": bcl.unwrap_or_else(|| format!("{edge}/auth/oidc/backchannel-logout")),
        });
        if let (Some(c), Value::Object(extra)) = (cfg.as_object_mut(), extra) {
            c.extend(extra);
        }
        let path = dir.path().join("client.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        Self::spawn("provider.mjs", &[path.to_str().unwrap()], dir)
    }

    /// The rogue provider (bad ID tokens on demand).
    pub fn rogue() -> OidcPeer {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn("rogue.mjs", &[CLIENT_ID], dir)
    }

    fn spawn(script: &str, args: &[&str], dir: tempfile::TempDir) -> OidcPeer {
        assert!(
            peers_dir().join("node_modules/oidc-provider").is_dir(),
            "tests/peers/oidc/node_modules missing: run scripts/install-test-deps.sh"
        );
        let port = free_port();
        let mut child = Command::new("node")
            .arg(peers_dir().join(script))
            .arg(port.to_string())
            .args(args)
            .current_dir(peers_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (scripts/install-test-deps.sh)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{script} did not become ready"));
        OidcPeer {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Rogue only: how the next ID token is bad.
    pub async fn set_mode(&self, mode: &str) {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}/mode", self.issuer()))
            .body(mode.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The edge under test.
pub struct Edge {
    pub process: EdgeProcess,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Edge {
    /// Starts moodle-edge on `port` in front of `moodle`, with `sso` as its `sso:` section
    /// (`{DIR}` in string values becomes the temp dir; the token and client secret files are
    /// written there as `userkey-token` and `client-secret`).
    pub fn start(port: u16, moodle: &str, sso: Value) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("userkey-token"), USERKEY_TOKEN).unwrap();
        std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
        let sso = replace_dir(sso, dir.path());
        let dataroot = dir.path().join("moodledata");
        std::fs::create_dir_all(&dataroot).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = json!({
            "server": {
                "listen": [{ "addr": addr.to_string() }],
                "admin_addr": admin.to_string(),
                "worker_threads": 2,
                "shutdown_timeout": "2s",
            },
            "upstream": { "url": moodle, "connect_timeout": "1s", "response_timeout": "10s" },
            "moodle": { "wwwroot": format!("http://127.0.0.1:{port}"), "dataroot": dataroot },
            "sso": sso,
            "log": { "level": "info", "format": "json", "access": { "format": "json", "target": "stdout" } },
        });
        let text = serde_json::to_string_pretty(&config).unwrap();
        let mut process = EdgeProcess::spawn(dir, BIN, &text, &[]);
        process.wait_listening(
            &[addr.to_string(), admin.to_string()],
            Duration::from_secs(15),
        );
        Edge {
            process,
            addr,
            admin,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// stdout + stderr.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Waits until the log has a line containing every one of `parts`.
    pub async fn wait_log(&self, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output();
            if out.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
                return;
            }
            if Instant::now() > deadline {
                panic!("no log line with {parts:?}\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn replace_dir(v: Value, dir: &Path) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{DIR}", dir.to_str().unwrap())),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| replace_dir(x, dir)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, replace_dir(x, dir)))
                .collect(),
        ),
        other => other,
    }
}

/// The `sso:` section for one plain OAuth 2 provider named `id` at the real provider `issuer`
/// (its GitHub-shaped `/api/user` as userinfo).
pub fn oauth2_sso(id: &str, issuer: &str) -> Value {
    json!({
        "intercept": ["/login/index.php"],
        "moodle_handoff": { "token_file": "{DIR}/userkey-token", "mapping_field": "username" },
        "providers": [{
            "id": id,
            "kind": "oauth2",
            "label": { "en": "Code hosting account" },
            "client_id": OAUTH2_CLIENT_ID,
            "client_secret_file": "{DIR}/client-secret",
            "scopes": ["read:user"],
            "user_claim": "login",
            "firstname_claim": "name",
            "oauth2": {
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "userinfo_endpoint": format!("{issuer}/api/user"),
                "subject_field": "id",
            },
        }],
    })
}

/// The `sso:` section for one OIDC provider named `id` at `issuer`.
pub fn oidc_sso(id: &str, issuer: &str) -> Value {
    json!({
        "intercept": ["/login/index.php"],
        "moodle_handoff": { "token_file": "{DIR}/userkey-token", "mapping_field": "username" },
        "providers": [{
            "id": id,
            "kind": "oidc",
            "label": { "en": "University account", "fr": "Compte universitaire" },
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret_file": "{DIR}/client-secret",
            "scopes": ["openid", "email", "profile"],
            "user_claim": "preferred_username",
            "userinfo": true,
        }],
    })
}
