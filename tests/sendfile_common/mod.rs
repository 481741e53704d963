//! A small harness for the file-offload integration tests (`tests/sendfile_*.rs`), kept apart
//! from the core tests' `tests/common/` on purpose:
//!
//! * [`Standin`]: a stand-in Moodle (hyper, on its own thread and runtime) that answers
//!   `/pluginfile.php/NAME` exactly like `lib/xsendfilelib.php`: an empty body, the whole
//!   X-Accel-Redirect value rawurlencoded, Moodle's own headers. It counts its open connections
//!   and the requests it is still working on, so a test can tell whether the proxy keeps it busy.
//! * [`Proxy`]: the real `moodle-edge` binary with a YAML config in a temp dir, output captured
//!   (an [`EdgeProcess`], shared with the other harnesses).
//! * [`Nginx`]: nginx 1.22 proxying to the same stand-in, with the `internal` location.
//!
//! Shared with the other harnesses through `tests/common/`: [`request`], a raw HTTP/1.1 client
//! (`Connection: close`, read to EOF) that shows exactly what came over the wire, repeated
//! headers included; free ports, VmRSS, metric lines, and [`wait_for`]: nothing sleeps a fixed
//! time waiting for something to happen, it polls until a deadline.

#![allow(dead_code)]

#[path = "../common/process.rs"]
pub mod process;
#[path = "../common/raw.rs"]
pub mod raw;
#[path = "../common/standin.rs"]
pub mod standin;
#[path = "../common/util.rs"]
pub mod util;

pub use process::{EdgeProcess, BIN};
pub use raw::*;
pub use standin::StandinServer;
pub use util::*;

/// What [`request`] returns: status, headers in wire order (repeats kept), body.
pub type Resp = RawResponse;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use tempfile::TempDir;

/// The binary under test: `BIN`, or `SENDFILE_TEST_BIN` (e.g. a release build) when set.
pub fn bin() -> String {
    std::env::var("SENDFILE_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// The X-Accel-Redirect URI prefix both proxies map to the data directory.
pub const PREFIX: &str = "/moodledata-internal/";

/// The stand-in's Last-Modified (Moodle sends the file record's timemodified; both proxies
/// replace it with the file's mtime).
pub const MOODLE_LAST_MODIFIED: &str = "Tue, 01 Oct 2024 10:00:00 GMT";

/// PHP's `rawurlencode`: everything but `A-Z a-z 0-9 - _ . ~` (slashes included).
const RAWURLENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn rawurlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RAWURLENCODE).to_string()
}

/// Deterministic file content: byte i is `(i * 7 + i / 251) % 256`, so neighbouring ranges differ.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 251) % 256) as u8).collect()
}

/// `nginx` from PATH (and /usr/sbin, /sbin, where Debian puts it and where `scripts/test.sh`
/// looks too), or None.
pub fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

// ------------------------------------------------------------------------------------------
// the stand-in Moodle

#[derive(Default)]
pub struct StandinStats {
    /// Requests the stand-in is still answering (health probes excluded).
    pub in_flight: AtomicI64,
    /// Requests answered (health probes excluded).
    pub requests: AtomicU64,
}

/// Decrements a counter however the handler ends.
struct Dec<'a>(&'a AtomicI64);

impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Standin {
    pub addr: SocketAddr,
    pub stats: Arc<StandinStats>,
    server: StandinServer,
}

impl Standin {
    /// Answers:
    /// - `/pluginfile.php/NAME[?limit=N]`: Moodle's X-Accel-Redirect for `PREFIX + NAME`, the
    ///   whole value rawurlencoded; `limit` adds `X-Accel-Limit-Rate: N`.
    /// - `/raw?v=VALUE`: X-Accel-Redirect set to VALUE (percent-decoded once from the query) as
    ///   is, with the same Moodle headers: for hostile values.
    /// - anything else: 200 `stand-in`.
    pub fn start() -> Standin {
        let stats = Arc::new(StandinStats::default());
        let st = stats.clone();
        let server = StandinServer::start(1, move |req, _conn| answer(st.clone(), req));
        Standin {
            addr: server.addr,
            stats,
            server,
        }
    }

    /// Upstream connections open now.
    pub fn open(&self) -> i64 {
        self.server.open()
    }

    /// Upstream connections ever accepted.
    pub fn accepted(&self) -> u64 {
        self.server.accepted()
    }

    pub fn in_flight(&self) -> i64 {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }
}

fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_encoding::percent_decode_str(v).collect())
    })
}

async fn answer(
    stats: Arc<StandinStats>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == PROBE_PATH {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    stats.in_flight.fetch_add(1, Ordering::SeqCst);
    let _done = Dec(&stats.in_flight);
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let query = req.uri().query().unwrap_or("").to_string();

    let (value, name): (Vec<u8>, String) = if let Some(name) = path.strip_prefix("/pluginfile.php/")
    {
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .into_owned();
        // Exactly what lib/xsendfilelib.php sends: rawurlencode() of the whole value.
        (rawurlencode(&format!("{PREFIX}{name}")).into_bytes(), name)
    } else if path == "/raw" {
        match query_param(&query, "v") {
            Some(v) => (v, "raw.bin".to_string()),
            None => return Ok(plain(StatusCode::BAD_REQUEST, "no v")),
        }
    } else {
        return Ok(plain(StatusCode::OK, "stand-in"));
    };

    let content_type = if name.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else if name.ends_with(".pdf") {
        "application/pdf"
    } else {
        "application/octet-stream"
    };
    let hash = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(name.as_bytes()));
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    let Ok(redirect) = http::HeaderValue::from_bytes(&value) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "value not a header"));
    };
    headers.insert("x-accel-redirect", redirect);
    let filename = name.rsplit('/').next().unwrap_or("file");
    for (k, v) in [
        ("content-type", content_type.to_string()),
        (
            "content-disposition",
            format!("inline; filename=\"{}\"", rawurlencode(filename)),
        ),
        ("cache-control", "private, max-age=10, no-transform".into()),
        ("expires", "Thu, 01 Jan 2037 00:00:00 GMT".into()),
        ("pragma", String::new()),
        ("last-modified", MOODLE_LAST_MODIFIED.into()),
        ("etag", format!("\"{hash}\"")),
        ("accept-ranges", "bytes".into()),
        (
            "set-cookie",
            "MoodleSession=abc123; path=/; HttpOnly".into(),
        ),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    if let Some(limit) = query_param(&query, "limit") {
        if let Ok(v) = http::HeaderValue::from_bytes(&limit) {
            headers.insert("x-accel-limit-rate", v);
        }
    }
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

// ------------------------------------------------------------------------------------------
// moodle-edge

/// The running binary; the process itself ([`EdgeProcess`]: `pid()`, `output()`, ...) through
/// `Deref`.
pub struct Proxy {
    process: EdgeProcess,
    pub port: u16,
    pub admin_port: u16,
}

process::deref_to_process!(Proxy, process);

impl Proxy {
    /// Starts the binary with `PREFIX` mapped to `root`, in front of `upstream`.
    /// `upstream_extra` is YAML indented by two spaces, added under `upstream:`.
    pub fn start(upstream: SocketAddr, root: &Path, upstream_extra: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let yaml = format!(
            r#"server:
  listen:
    - addr: "127.0.0.1:{port}"
  admin_addr: "127.0.0.1:{admin_port}"
  shutdown_timeout: 1s
upstream:
  url: "http://{upstream}"
  health_check:
    path: "{PROBE_PATH}"
{upstream_extra}
moodle:
  wwwroot: "http://127.0.0.1:{port}"
  dataroot: "{root}"
sendfile:
  mappings:
    - prefix: {PREFIX}
      root: "{root}"
  sendfile_roots: ["{root}"]
log:
  level: info
  format: text
  access:
    format: combined
"#,
            root = root.display(),
        );
        let mut proxy = Proxy {
            process: EdgeProcess::spawn(dir, &bin(), &yaml, &[]),
            port,
            admin_port,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.process.assert_running();
            if let Ok(r) = request(self.port, "GET", "/", &[]) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moodle-edge did not answer:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One metric's value from the proxy's /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.admin_port, name)
    }
}

/// One metric's value from the admin listener's /metrics on `admin_port`: the first sample
/// line that starts with `name` (give labels in `name` to pick one).
pub fn metric(admin_port: u16, name: &str) -> Option<f64> {
    metric_value(
        &request(admin_port, "GET", "/metrics", &[]).ok()?.text(),
        name,
    )
}

// ------------------------------------------------------------------------------------------
// nginx

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Nginx {
    /// nginx 1.22 as Moodle's front server would run it: proxy_pass to the stand-in, and the
    /// X-Accel-Redirect target as an `internal` location aliased to `root`. Unprivileged,
    /// everything inside its own temp dir, `daemon off`, stopped by PID on drop.
    pub fn start(nginx: &Path, upstream: SocketAddr, root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location {PREFIX} {{
            internal;
            alias {root}/;
        }}
    }}
}}
"#,
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited early ({status}):\n{}", n.errors());
            }
            if request(port, "GET", "/", &[]).is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer:\n{}",
                n.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    pub fn errors(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master (the PID we started) stops master and worker together; a
        // SIGKILL would leave the worker behind.
        process::terminate(&mut self.child, Duration::from_secs(5));
    }
}

// ------------------------------------------------------------------------------------------
// multipart/byteranges

/// One part of a `multipart/byteranges` body: its headers (sorted) and its data.
pub type Part = (Vec<(String, String)>, Vec<u8>);

/// The parts of a `multipart/byteranges` body, boundary-free.
pub fn multipart_parts(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    // Every part starts after a delimiter; the body may or may not begin with CRLF.
    let mut text = Vec::with_capacity(body.len() + 2);
    if !body.starts_with(b"\r\n") {
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(body);
    let mut positions = Vec::new();
    let mut i = 0;
    while let Some(p) = text[i..]
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_slice())
    {
        positions.push(i + p);
        i += p + delimiter.len();
    }
    let mut parts = Vec::new();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n")?;
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..split]).ok()?;
        let mut headers: Vec<(String, String)> = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        headers.sort();
        parts.push((headers, part[split + 4..].to_vec()));
    }
    // The closing delimiter must be there.
    let last = *positions.last()?;
    text[last + delimiter.len()..]
        .starts_with(b"--")
        .then_some(parts)
}
