//! Shared harness for the core integration tests (`tests/core_*.rs`).
//!
//! * [`Upstream`]: a stand-in Moodle, a small hyper server inside the test process, programmable
//!   per path ([`Reply`]); it records every request it sees and counts accepted connections.
//! * [`RawUpstream`]: a raw-TCP stand-in for answers hyper would not produce (cut mid-body).
//! * [`Proxy`]: the real `moodle-edge` binary, started with a YAML config in a temp dir, stdout
//!   and stderr captured to files there, stopped by SIGTERM (then SIGKILL) on drop.
//! * [`Raw`]: hand-written HTTP/1.x over a plain TCP socket, read back with a timeout.
//!
//! Nothing here sleeps for a fixed time to let something happen: [`wait_for`] polls a condition
//! until a deadline.
#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_moodle-edge");

/// The path the proxy's upstream health probe uses in every test config; the stand-in answers
/// it without recording it, so "the upstream saw nothing" stays exact.
pub const PROBE_PATH: &str = "/__probe";

// ------------------------------------------------------------------------------------------
// small utilities

/// A port that was free a moment ago (bind :0, then drop). Never hands out the same port twice
/// in one test process.
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if used.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls `cond` every 20ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`wait_for`], for use inside tokio tests.
pub async fn wait_for_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deterministic test data: byte i of a stream is `i % 251`.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| (0..(251 + (1 << 20))).map(|i| (i % 251) as u8).collect());
    let mut out = Vec::with_capacity(len);
    let mut done = 0usize;
    while done < len {
        let start = ((offset + done as u64) % 251) as usize;
        let n = (len - done).min(1 << 20);
        out.extend_from_slice(&block[start..start + n]);
        done += n;
    }
    Bytes::from(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// sha256 of `pattern(0, len)`, computed in 1 MiB pieces.
pub fn pattern_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        h.update(pattern(off, n));
        off += n as u64;
    }
    hex::encode(h.finalize())
}

/// A reqwest client that never uses an environment proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

// ------------------------------------------------------------------------------------------
// the stand-in upstream

type UpBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How the stand-in answers a path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Waited after reading the request body, before sending the response head.
    pub delay: Duration,
    /// Extra response headers (hop-by-hop ones included, as given).
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
}

#[derive(Clone, Debug)]
pub enum ReplyBody {
    /// JSON: upstream name, method, uri, version, headers, body length and sha256, connection id.
    Echo,
    /// `pattern(0, n)` streamed in 64 KiB pieces with a Content-Length.
    Pattern(u64),
    /// Announces `announce` bytes, sends `send` of them, then goes silent (never ends).
    Stall { announce: u64, send: u64 },
    /// Never sends a response head.
    Never,
    /// 101 Switching Protocols, then echoes every byte back.
    Upgrade,
}

impl Reply {
    pub fn echo() -> Reply {
        Reply {
            status: 200,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: ReplyBody::Echo,
        }
    }
    pub fn pattern(len: u64) -> Reply {
        Reply {
            body: ReplyBody::Pattern(len),
            ..Reply::echo()
        }
    }
    pub fn stall(announce: u64, send: u64) -> Reply {
        Reply {
            body: ReplyBody::Stall { announce, send },
            ..Reply::echo()
        }
    }
    pub fn never() -> Reply {
        Reply {
            body: ReplyBody::Never,
            ..Reply::echo()
        }
    }
    pub fn upgrade() -> Reply {
        Reply {
            body: ReplyBody::Upgrade,
            ..Reply::echo()
        }
    }
    pub fn delay_ms(mut self, ms: u64) -> Reply {
        self.delay = Duration::from_millis(ms);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }
}

/// One request as the stand-in saw it (recorded when its head arrived).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub conn: u64,
    /// Body length and sha256, once the whole body arrived; None while (or if never) complete.
    pub body: Option<(u64, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

struct UpState {
    name: String,
    routes: Mutex<Vec<(String, Reply)>>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicU64,
    probes: AtomicU64,
}

impl UpState {
    fn reply_for(&self, path: &str) -> Reply {
        let routes = self.routes.lock().unwrap();
        routes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, r)| r.clone())
            .unwrap_or_else(Reply::echo)
    }
}

/// The stand-in Moodle: a hyper HTTP/1.1 server on 127.0.0.1 with its own runtime.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::named("A")
    }

    /// `name` comes back in every echo, to tell two stand-ins apart.
    pub fn named(name: &str) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = Arc::new(UpState {
            name: name.to_string(),
            routes: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        });
        let st = state.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle_upstream(req, id, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers paths starting with `prefix` (the longest prefix wins) with `reply`.
    pub fn route(&self, prefix: &str, reply: Reply) -> &Self {
        self.state
            .routes
            .lock()
            .unwrap()
            .push((prefix.to_string(), reply));
        self
    }

    /// Every request seen so far, health probes excluded.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri.starts_with(path))
            .collect()
    }

    /// TCP connections accepted so far (the health probe's included).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> u64 {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn boxed<B>(b: B) -> UpBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    b.map_err(Into::into).boxed()
}

fn text_response(status: u16, text: String) -> Response<UpBody> {
    let mut r = Response::new(boxed(Full::new(Bytes::from(text))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

async fn handle_upstream(
    mut req: Request<Incoming>,
    conn: u64,
    st: Arc<UpState>,
) -> Result<Response<UpBody>, Infallible> {
    if req.uri().path() == PROBE_PATH {
        st.probes.fetch_add(1, Ordering::SeqCst);
        return Ok(text_response(200, "ok".into()));
    }
    let reply = st.reply_for(req.uri().path());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let index = {
        let mut seen = st.seen.lock().unwrap();
        seen.push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: headers.clone(),
            conn,
            body: None,
        });
        seen.len() - 1
    };

    if let ReplyBody::Upgrade = reply.body {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(boxed(http_body_util::Empty::<Bytes>::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        resp.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        return Ok(resp);
    }

    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    len += d.len() as u64;
                }
            }
            Err(_) => return Ok(text_response(400, "broken request body".into())),
        }
    }
    let sha = hex::encode(hasher.finalize());
    st.seen.lock().unwrap()[index].body = Some((len, sha.clone()));

    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = match reply.body {
        ReplyBody::Echo => {
            let v = json!({
                "upstream": st.name,
                "method": method,
                "uri": uri,
                "version": version,
                "headers": headers,
                "body_len": len,
                "sha256": sha,
                "conn": conn,
            });
            let mut r = text_response(200, v.to_string());
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        ReplyBody::Pattern(n) => {
            let mut r = Response::new(boxed(PatternBody {
                sent: 0,
                send: n,
                stall: false,
            }));
            r.headers_mut().insert("content-length", n.into());
            r
        }
        ReplyBody::Stall { announce, send } => {
            let mut r = Response::new(boxed(PatternBody {
                sent: 0,
                send,
                stall: true,
            }));
            r.headers_mut().insert("content-length", announce.into());
            r
        }
        ReplyBody::Never => std::future::pending().await,
        ReplyBody::Upgrade => unreachable!(),
    };
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in &reply.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Ok(resp)
}

/// Streams `pattern(0, send)`; then ends, or (stall) stays pending for ever.
struct PatternBody {
    sent: u64,
    send: u64,
    stall: bool,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent < this.send {
            let n = (this.send - this.sent).min(64 * 1024) as usize;
            let chunk = pattern(this.sent, n);
            this.sent += n as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.stall {
            // Never woken: the connection stays open and silent until someone drops it.
            return Poll::Pending;
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        !self.stall && self.sent >= self.send
    }
}

/// A raw-TCP stand-in: every accepted connection goes to `handler` on its own thread.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
}

impl RawUpstream {
    pub fn start(handler: fn(TcpStream)) -> RawUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || handler(stream));
            }
        });
        RawUpstream { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads from `s` until the end of a request head (or EOF); returns the head.
pub fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

// ------------------------------------------------------------------------------------------
// the proxy under test

/// The config every test starts from: one plain listener, an admin port, short timeouts.
pub fn base_config(dir: &Path, upstream_url: &str) -> Value {
    let dataroot = dir.join("moodledata");
    std::fs::create_dir_all(&dataroot).unwrap();
    json!({
        "server": {
            "listen": [{ "addr": format!("127.0.0.1:{}", free_port()) }],
            "admin_addr": format!("127.0.0.1:{}", free_port()),
            "shutdown_timeout": "3s",
            "worker_threads": 2,
            "limits": {
                "header_read_timeout": "5s",
                "client_body_timeout": "5s",
            },
        },
        "upstream": {
            "url": upstream_url,
            "connect_timeout": "1s",
            "response_timeout": "10s",
            "idle_timeout": "5s",
            "health_check": { "path": PROBE_PATH, "interval": "300ms", "timeout": "1s" },
        },
        "moodle": {
            "wwwroot": "http://lms.test",
            "dataroot": dataroot,
        },
    })
}

/// The running binary.
pub struct Proxy {
    child: Child,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub config: Value,
    /// The `server.listen` addresses, in order.
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    exited: Option<ExitStatus>,
}

impl Proxy {
    /// Starts the binary in front of `upstream_url`; `tweak` edits the config (and may write
    /// files, e.g. certificates, into the temp dir it is given).
    pub fn start(upstream_url: &str, tweak: impl FnOnce(&mut Value, &Path)) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut config = base_config(dir.path(), upstream_url);
        tweak(&mut config, dir.path());
        Proxy::spawn(dir, config, &[])
    }

    /// Writes `config` into `dir` and runs `prefix... moodle-edge run --config F`; waits until
    /// every listener is bound.
    pub fn spawn(dir: TempDir, config: Value, prefix: &[&str]) -> Proxy {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("MOODLE_EDGE_LOG")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().expect("spawn moodle-edge");
        let addrs: Vec<SocketAddr> = config["server"]["listen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["addr"].as_str().unwrap().parse().unwrap())
            .collect();
        let admin = config["server"]["admin_addr"]
            .as_str()
            .map(|a| a.parse().unwrap());
        let mut proxy = Proxy {
            child,
            dir,
            config_path,
            config,
            addrs,
            admin,
            exited: None,
        };
        if prefix.is_empty() {
            proxy.wait_bound();
        }
        proxy
    }

    /// Waits for the "listening" log lines (every socket is bound before they are written), so
    /// no probe connection is needed: a TLS port would count it as a failed handshake.
    pub fn wait_bound(&mut self) {
        let mut wanted: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        if let Some(a) = self.admin {
            wanted.push(a.to_string());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.stdout();
            if wanted.iter().all(|w| out.contains(w.as_str())) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "moodle-edge exited early ({status}).\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "moodle-edge did not start listening.\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until /readyz says 200 (the first upstream probe has been answered).
    pub fn wait_ready(&self) {
        wait_for("/readyz 200", Duration::from_secs(10), || {
            self.admin_get("/readyz")
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// stdout and stderr, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// The JSON access-log lines written so far (event and audit lines have no `target`).
    pub fn access_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("status").is_some() && v.get("target").is_some())
            .collect()
    }

    /// Waits for an access-log line whose target starts with `target`.
    pub fn access_line_for(&self, target: &str) -> Value {
        let mut found = None;
        wait_for(
            &format!("an access-log line for {target}"),
            Duration::from_secs(10),
            || {
                found = self
                    .access_lines()
                    .into_iter()
                    .find(|v| v["target"].as_str().is_some_and(|t| t.starts_with(target)));
                found.is_some()
            },
        );
        found.unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Rewrites the config file (for SIGHUP tests).
    pub fn write_config(&self, config: &Value) {
        std::fs::write(
            &self.config_path,
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// VmRSS of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_for("moodle-edge to exit", timeout, || {
            status = self.try_exit();
            status.is_some()
        });
        status.unwrap()
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str) -> std::io::Result<RawResponse> {
        let admin = self.admin.expect("no admin listener");
        let mut raw = Raw::connect(admin)?;
        raw.send(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        raw.read_response()
    }

    /// The value of one metric series (the first line whose name and labels start with
    /// `series`), or None.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = self.admin_get("/metrics").ok()?.text();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------
// raw HTTP/1.x over TCP

/// A plain TCP connection for hand-written requests.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn eof() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed")
    }

    /// Reads one response (head, then a Content-Length, chunked or until-close body).
    pub fn read_response(&mut self) -> std::io::Result<RawResponse> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.fill()? == 0 {
                return Err(Raw::eof());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(Raw::eof());
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    if self.fill()? == 0 {
                        return Err(Raw::eof());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .map_err(|_| {
                    std::io::Error::other(format!("bad chunk size {size_text:?}"))
                })?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if self.fill()? == 0 {
                        return Err(Raw::eof());
                    }
                }
                resp.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill()? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads whatever arrives (discarding it) and says whether the peer closed the connection
    /// (EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
    }

    /// True when nothing at all arrives within `within` (and the connection stays open).
    pub fn silent_for(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut chunk = [0u8; 1024];
        let silent = match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        silent
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` on a new connection and reads one response.
pub fn roundtrip(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut raw = Raw::connect(addr).unwrap();
    raw.send(bytes).unwrap();
    raw.read_response().unwrap()
}

/// A GET with `Host: lms.test` and the given extra header lines (each ending in \r\n).
pub fn get(addr: SocketAddr, path: &str, extra: &str) -> RawResponse {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: lms.test\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// The headers of an echo body, as (name, value) pairs.
pub fn echo_headers(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The (first) value of header `name` in an echo body.
pub fn echo_header(echo: &Value, name: &str) -> Option<String> {
    echo_headers(echo)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

// ------------------------------------------------------------------------------------------
// TLS material

/// A self-signed certificate for `names`, written as `<stem>.crt` / `<stem>.key` in `dir`;
/// returns (cert path, key path, cert DER).
pub fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, certified.cert.der().to_vec())
}
