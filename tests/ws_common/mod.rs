//! Harness for the web-service guard tests (`tests/ws_*.rs`).
//!
//! * [`Moodle`]: a stand-in Moodle inside the test process (hyper, on its own runtime). How it
//!   answers is chosen per call by `wsfunction` (query or form body) or by path ([`Act`]): answer,
//!   sleep before the headers, fail with a status, drop the connection, answer one of Moodle's
//!   error shapes, or hold the call until a [`Gate`] opens. It records every call it received:
//!   method, path, query, headers, body bytes and their sha256.
//! * [`Edge`]: the real `moodle-edge` binary ([`EdgeProcess`], shared with the other harnesses)
//!   with a YAML config in a temp dir; stdout, stderr and the audit log go to files there; killed
//!   by PID on drop.
//!
//! The helpers every harness shares (free ports, [`wait_for_async`], sha256, metric lines) come
//! from `tests/common/`. Nothing sleeps a fixed time to let something happen: [`wait_for_async`]
//! polls until a deadline.
#![allow(dead_code)]

#[path = "../common/process.rs"]
pub mod process;
#[path = "../common/standin.rs"]
pub mod standin;
#[path = "../common/util.rs"]
pub mod util;

pub use process::{EdgeProcess, BIN};
pub use standin::StandinServer;
pub use util::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::watch;

pub const REST: &str = "/webservice/rest/server.php";
pub const TOKEN_PHP: &str = "/login/token.php";

/// What the edge writes instead of a token: the first 12 hex characters of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    sha256_hex(token.as_bytes())[..12].to_string()
}

/// A distinct 32-hex token per `n`, never a substring of another one.
pub fn token(n: u8) -> String {
    format!("{n:02x}5e1f0c3a9b7d2e4f6a8c0b1d3e5f7a")
}

// ------------------------------------------------------------------------------------------
// the stand-in Moodle

/// Released by the test: held calls wait for it.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// How the stand-in answers a call.
#[derive(Clone)]
pub enum Act {
    /// 200 `{"ok":true,"function":...}`.
    Ok,
    /// Sleeps before the response head, then answers like `Ok`.
    Slow(Duration),
    /// This status with a short HTML page (what Apache/PHP-FPM send on a crash or overload).
    Status(u16),
    /// Drops the connection without an answer.
    Close,
    /// HTTP 200 with a Moodle exception: JSON when `moodlewsrestformat=json`, XML otherwise.
    Exception {
        exception: &'static str,
        errorcode: &'static str,
        message: &'static str,
        debuginfo: Option<&'static str>,
    },
    /// /login/token.php's own error shape: `{"error","errorcode"}`.
    TokenError(&'static str),
    /// /login/token.php's answer: `{"token":...,"privatetoken":null}`.
    Token(String),
    /// Waits until the gate opens, then answers like `Ok`.
    Hold(Gate),
}

pub fn dml_deadlock() -> Act {
    Act::Exception {
        exception: "dml_write_exception",
        errorcode: "dmlwriteexception",
        message: "Error writing to database",
        debuginfo: Some("Deadlock found when trying to get lock; try restarting transaction"),
    }
}
pub fn invalid_parameter() -> Act {
    Act::Exception {
        exception: "invalid_parameter_exception",
        errorcode: "invalidparameter",
        message: "Invalid parameter value detected",
        debuginfo: Some("users => Invalid parameter value detected"),
    }
}
pub fn invalid_token() -> Act {
    Act::Exception {
        exception: "webservice_access_exception",
        errorcode: "invalidtoken",
        message: "Invalid token - token not found",
        debuginfo: None,
    }
}
pub fn no_capability() -> Act {
    Act::Exception {
        exception: "required_capability_exception",
        errorcode: "nopermissions",
        message: "Sorry, but you do not currently have permissions to do that (Create users).",
        debuginfo: None,
    }
}
pub fn business_error() -> Act {
    Act::Exception {
        exception: "moodle_exception",
        errorcode: "usernamenotunique",
        message: "Username already exists",
        debuginfo: None,
    }
}

/// One call as the stand-in received it (recorded once its whole body arrived).
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub sha256: String,
    /// `wsfunction` as the stand-in read it (POST over GET, like Moodle).
    pub function: Option<String>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct MoodleState {
    by_function: Mutex<HashMap<String, Act>>,
    by_path: Mutex<HashMap<String, Act>>,
    received: Mutex<Vec<Received>>,
}

pub struct Moodle {
    pub addr: SocketAddr,
    state: Arc<MoodleState>,
    _server: StandinServer,
}

impl Moodle {
    pub fn start() -> Moodle {
        let state = Arc::new(MoodleState::default());
        let st = state.clone();
        let server = StandinServer::start(1, move |req, _conn| answer(req, st.clone()));
        Moodle {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls naming `function` get `act` (other calls: `Act::Ok`).
    pub fn on(&self, function: &str, act: Act) -> &Self {
        self.state
            .by_function
            .lock()
            .unwrap()
            .insert(function.to_string(), act);
        self
    }

    /// Calls to `path` get `act` (a function rule wins over a path rule).
    pub fn on_path(&self, path: &str, act: Act) -> &Self {
        self.state
            .by_path
            .lock()
            .unwrap()
            .insert(path.to_string(), act);
        self
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn count_fn(&self, function: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.function.as_deref() == Some(function))
            .count()
    }
}

fn form_value(input: &[u8], key: &str) -> Option<String> {
    url::form_urlencoded::parse(input)
        .filter(|(k, _)| k == key)
        .last()
        .map(|(_, v)| v.into_owned())
}

type Answer = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn answer(req: Request<Incoming>, st: Arc<MoodleState>) -> Result<Answer, std::io::Error> {
    let path = req.uri().path().to_string();
    if path == PROBE_PATH {
        return Ok(reply(200, "text/plain", "up".into()));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let pick = |key: &str| {
        is_form
            .then(|| form_value(&body, key))
            .flatten()
            .or_else(|| form_value(query.as_bytes(), key))
    };
    let function = pick("wsfunction");
    let json_format = pick("moodlewsrestformat").as_deref() == Some("json");
    st.received.lock().unwrap().push(Received {
        method,
        path: path.clone(),
        query: query.clone(),
        headers,
        sha256: sha256_hex(&body),
        body,
        function: function.clone(),
    });
    let act = function
        .as_ref()
        .and_then(|f| st.by_function.lock().unwrap().get(f).cloned())
        .or_else(|| st.by_path.lock().unwrap().get(&path).cloned())
        .unwrap_or(Act::Ok);
    let ok = || {
        reply(
            200,
            "application/json",
            json!({"ok": true, "function": function}).to_string(),
        )
    };
    Ok(match act {
        Act::Ok => ok(),
        Act::Slow(d) => {
            tokio::time::sleep(d).await;
            ok()
        }
        Act::Hold(gate) => {
            gate.wait().await;
            ok()
        }
        Act::Status(code) => reply(
            code,
            "text/html",
            format!("<html><body><h1>{code}</h1></body></html>"),
        ),
        Act::Close => return Err(std::io::Error::other("stand-in drops the connection")),
        Act::Exception {
            exception,
            errorcode,
            message,
            debuginfo,
        } => {
            if json_format {
                // Moodle's key order (webservice_rest_server::generate_error): exception,
                // errorcode, message, then debuginfo when debugging is on.
                let mut text = format!(
                    "{{\"exception\":{},\"errorcode\":{},\"message\":{}",
                    json!(exception),
                    json!(errorcode),
                    json!(message)
                );
                if let Some(d) = debuginfo {
                    text.push_str(&format!(",\"debuginfo\":{}", json!(d)));
                }
                text.push('}');
                reply(200, "application/json", text)
            } else {
                reply(
                    200,
                    "application/xml; charset=utf-8",
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<EXCEPTION class=\"{exception}\">\n<ERRORCODE>{errorcode}</ERRORCODE>\n<MESSAGE>{message}</MESSAGE>\n<DEBUGINFO>{}</DEBUGINFO>\n</EXCEPTION>\n",
                        debuginfo.unwrap_or("")
                    ),
                )
            }
        }
        Act::TokenError(code) => reply(
            200,
            "application/json",
            // login/token.php's order: error, errorcode, stacktrace, debuginfo, reproductionlink.
            format!(
                "{{\"error\":\"Invalid login, please try again\",\"errorcode\":{},\"stacktrace\":null,\"debuginfo\":null,\"reproductionlink\":null}}",
                json!(code)
            ),
        ),
        Act::Token(t) => reply(
            200,
            "application/json",
            json!({"token": t, "privatetoken": null}).to_string(),
        ),
    })
}

// ------------------------------------------------------------------------------------------
// the edge

/// The running binary; the process itself ([`EdgeProcess`]: `dir`, `pid()`, `stdout()`, ...)
/// through `Deref`.
pub struct Edge {
    process: EdgeProcess,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
}

impl Edge {
    /// Starts moodle-edge in front of `upstream` with `webservice` as its `webservice:` section.
    /// `files` are written into the temp dir first (e.g. token files); `{DIR}` in `webservice`
    /// string values is replaced with the temp dir.
    pub async fn start(upstream: &str, webservice: Value, files: &[(&str, &str)]) -> Edge {
        Edge::start_with(upstream, webservice, json!({}), files).await
    }

    /// Like [`Edge::start`], with more top-level sections (e.g. `store:`) in `extra`.
    pub async fn start_with(
        upstream: &str,
        webservice: Value,
        extra: Value,
        files: &[(&str, &str)],
    ) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let webservice = replace_dir(webservice, dir.path());
        let dataroot = dir.path().join("moodledata");
        std::fs::create_dir_all(&dataroot).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = json!({
            "server": {
                "listen": [{ "addr": addr.to_string() }],
                "admin_addr": admin.to_string(),
                "worker_threads": 2,
                "shutdown_timeout": "2s",
            },
            "upstream": {
                "url": upstream,
                "connect_timeout": "1s",
                "response_timeout": "10s",
                "health_check": { "path": PROBE_PATH, "interval": "1s", "timeout": "1s" },
            },
            "moodle": { "wwwroot": "http://lms.test", "dataroot": dataroot },
            "webservice": webservice,
            "log": {
                "level": "info",
                "format": "json",
                "access": { "format": "json", "target": "stdout" },
                "audit": { "target": "file", "path": dir.path().join("audit.log") },
            },
        });
        let mut config = config;
        if let (Some(c), Value::Object(more)) = (config.as_object_mut(), extra) {
            c.extend(more);
        }
        // JSON is YAML: written as is.
        let text = serde_json::to_string_pretty(&config).unwrap();
        let process = EdgeProcess::spawn(dir, BIN, &text, &[]);
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut edge = Edge {
            process,
            addr,
            admin,
            http,
        };
        // A short blocking wait: the stand-in runs on its own runtime.
        edge.process.wait_listening(
            &[addr.to_string(), admin.to_string()],
            Duration::from_secs(15),
        );
        edge
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A REST call by GET: `wstoken`, `wsfunction`, and `moodlewsrestformat=json` when `json`.
    pub async fn call(&self, token: &str, function: &str, json: bool) -> Reply {
        let format = if json { "&moodlewsrestformat=json" } else { "" };
        self.get(&format!(
            "{REST}?wstoken={token}&wsfunction={function}{format}"
        ))
        .await
    }

    /// The same call in a task of its own (for calls that are held or must overlap).
    pub fn spawn_call(&self, token: &str, function: &str) -> tokio::task::JoinHandle<Reply> {
        let http = self.http.clone();
        let url = self.url(&format!(
            "{REST}?wstoken={token}&wsfunction={function}&moodlewsrestformat=json"
        ));
        tokio::spawn(async move {
            Reply::read(http.get(url).send().await.expect("request to the edge")).await
        })
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        let r = self
            .http
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request to the edge");
        Reply::read(r).await
    }

    pub async fn post(&self, path_and_query: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let r = self
            .http
            .post(self.url(path_and_query))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request to the edge");
        Reply::read(r).await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap()
    }

    /// The value of the series named exactly `series` (name with its labels, as Prometheus
    /// writes them), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    pub fn audit_text(&self) -> String {
        self.read("audit.log")
    }
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--- audit ---\n{}",
            self.stdout(),
            self.stderr(),
            self.audit_text()
        )
    }

    pub fn audit(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the audit log holds `n` lines (it is written from its own thread).
    pub async fn audit_lines(&self, n: usize) -> Vec<Value> {
        wait_for_async(&format!("{n} audit lines"), Duration::from_secs(10), || {
            self.audit().len() >= n
        })
        .await;
        self.audit()
    }

    /// Asserts none of `secrets` appears in stdout, stderr, the audit log or /metrics.
    pub async fn assert_secrets_absent(&self, secrets: &[&str]) {
        let metrics = self.metrics().await;
        let out = self.output();
        for s in secrets {
            let lower = s.to_ascii_lowercase();
            assert!(
                !out.to_ascii_lowercase().contains(&lower),
                "token {s} leaked into the logs:\n{out}"
            );
            assert!(
                !metrics.to_ascii_lowercase().contains(&lower),
                "token {s} leaked into /metrics"
            );
        }
    }
}

process::deref_to_process!(Edge, process);

fn replace_dir(v: Value, dir: &Path) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{DIR}", &dir.display().to_string())),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| replace_dir(x, dir)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, replace_dir(x, dir)))
                .collect(),
        ),
        other => other,
    }
}

/// An answer from the edge, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    async fn read(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Retry-After in whole seconds; panics when absent.
    pub fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After on {} {}", self.status, self.text()))
            .parse()
            .unwrap()
    }
    /// The edge's own Moodle-shaped JSON error: `{"exception":"moodle_exception","errorcode":..}`.
    pub fn assert_moodle_json(&self, status: u16, errorcode: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{:?}",
            self.headers
        );
        assert!(
            self.text()
                .starts_with("{\"exception\":\"moodle_exception\","),
            "Moodle's key order: {}",
            self.text()
        );
        let v = self.json();
        assert_eq!(v["exception"], "moodle_exception", "{v}");
        assert_eq!(v["errorcode"], errorcode, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    /// The edge's own Moodle XML error: `<EXCEPTION class="moodle_exception">`.
    pub fn assert_moodle_xml(&self, status: u16, errorcode: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/xml")),
            "{:?}",
            self.headers
        );
        let t = self.text();
        assert!(t.starts_with("<?xml"), "{t}");
        assert!(t.contains("<EXCEPTION class=\"moodle_exception\">"), "{t}");
        assert!(
            t.contains(&format!("<ERRORCODE>{errorcode}</ERRORCODE>")),
            "{t}"
        );
        assert!(t.contains("<MESSAGE>"), "{t}");
    }
}

/// A multipart/form-data body: `(name, filename, bytes)` parts; returns (content type, body).
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----moodleedgetestboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Deterministic binary data (every byte value appears).
pub fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

pub fn write_token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}
