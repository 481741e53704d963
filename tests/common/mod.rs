//! Shared harness for the core integration tests (`tests/core_*.rs`).
//!
//! * [`Upstream`]: a stand-in Moodle, a small hyper server inside the test process, programmable
//!   per path ([`Reply`]); it records every request it sees and counts accepted connections.
//! * [`RawUpstream`]: a raw-TCP stand-in for answers hyper would not produce (cut mid-body).
//! * [`Proxy`]: the real `moodle-edge` binary, started with a YAML config in a temp dir, stdout
//!   and stderr captured to files there, stopped by SIGTERM (then SIGKILL) on drop.
//!
//! What every harness shares lives in submodules, re-exported here; `tests/ws_common` and
//! `tests/sendfile_common` mount them with `#[path]`:
//!
//! * [`util`]: free ports, [`wait_for`] (polls a condition until a deadline; nothing here sleeps
//!   a fixed time to let something happen), sha256, VmRSS, metric lines.
//! * [`raw`]: [`Raw`], hand-written HTTP/1.x over a plain TCP socket, read back with a timeout.
//! * [`process`]: [`EdgeProcess`], the binary with its config in a temp dir, killed by PID.
//! * [`standin`]: [`StandinServer`], the accept loop and runtime under every hyper stand-in
//!   upstream (this one, the file-offload, web-service and SSO harnesses', the TLS upstream):
//!   each supplies only its handler.
#![allow(dead_code)]

pub mod process;
pub mod raw;
pub mod standin;
pub mod util;

pub use process::{EdgeProcess, BIN};
pub use raw::*;
pub use standin::StandinServer;
pub use util::*;

use std::convert::Infallible;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ------------------------------------------------------------------------------------------
// small utilities

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

/// The stand-in Moodle: its handler on the shared [`StandinServer`].
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpState>,
    server: StandinServer,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::named("A")
    }

    /// `name` comes back in every echo, to tell two stand-ins apart.
    pub fn named(name: &str) -> Upstream {
        let state = Arc::new(UpState {
            name: name.to_string(),
            routes: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            probes: AtomicU64::new(0),
        });
        let st = state.clone();
        let server =
            StandinServer::start(2, move |req, conn| handle_upstream(req, conn, st.clone()));
        Upstream {
            addr: server.addr,
            state,
            server,
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
        self.server.accepted()
    }

    pub fn probes(&self) -> u64 {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        self.server.stop();
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

/// The running binary; the process itself ([`EdgeProcess`]: `dir`, `pid()`, `stdout()`,
/// `output()`, `try_exit()`, `signal()`, ...) through `Deref`.
pub struct Proxy {
    process: EdgeProcess,
    pub config: Value,
    /// The `server.listen` addresses, in order.
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

process::deref_to_process!(Proxy, process);

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
        let text = serde_json::to_string_pretty(&config).unwrap();
        let process = EdgeProcess::spawn(dir, BIN, &text, prefix);
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
            process,
            config,
            addrs,
            admin,
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
        self.process
            .wait_listening(&wanted, Duration::from_secs(15));
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

    /// Rewrites the config file (for SIGHUP tests).
    pub fn write_config(&self, config: &Value) {
        self.write_config_text(&serde_json::to_string_pretty(config).unwrap());
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
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

    /// The value of one metric series (name with all its labels, as Prometheus writes them),
    /// or None.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.admin_get("/metrics").ok()?.text(), series)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // A graceful stop first; the process's own drop kills whatever is left.
        self.process.terminate(Duration::from_secs(5));
    }
}

// ------------------------------------------------------------------------------------------
// raw requests and echo bodies

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
