//! The direct upstream path: HTTP/1.1 to a plain-http upstream, spoken inside the request's own
//! task over pooled keep-alive connections.
//!
//! hyper's pooled client runs every upstream connection as a task of its own and hands each
//! request, response head and body chunk across channels to it: three hand-offs and two extra
//! task polls per request. On loopback, where a request costs ~15 µs in all, that is a large share
//! (see the README's performance section). This path writes the request head and reads the
//! response on the caller's task, and the response body reads the socket itself, so a bodiless
//! request costs two socket writes and two reads and no hand-off at all.
//!
//! Scope, on purpose narrow: requests without a body and without an upgrade, to an `http://`
//! upstream. Everything else (uploads, WebSocket, `https://` upstreams) keeps hyper's client, whose
//! full-duplex body handling those need. No crate offers an HTTP/1.1 client that runs in the
//! caller's task over a pool; the parsing itself is `httparse`, the same parser hyper uses.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; Transfer-Encoding wins
//! over Content-Length (and such a connection is not reused); differing Content-Lengths are an
//! error; otherwise the body runs to the close. A connection goes back to the pool only when its
//! body was read to its exact end with nothing after it, and the upstream allowed keep-alive.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::observe::metrics::CoreMetrics;
use crate::proxy::headers::{self, ForwardHeaders};

/// The longest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Reads ask for at least this much room.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum DirectError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connecting to {addr} took longer than {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("the upstream closed the connection before it answered")]
    ClosedBeforeAnswer,
    #[error("upstream I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream sent a malformed response head: {0}")]
    Parse(httparse::Error),
    #[error("the upstream's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream's response is badly framed: {0}")]
    Framing(&'static str),
}

impl DirectError {
    /// True when no connection to the upstream could be made at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            DirectError::Connect { .. } | DirectError::ConnectTimeout { .. }
        )
    }
}

/// One open upstream connection and what has been read from it but not yet used.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The header names of this connection's previous responses.
    names: NameCache,
}

/// The header names an upstream connection sent, by position: an application answers with the
/// same names in the same order response after response, so a name is looked up here (a
/// byte comparison) before it is parsed (lower-cased and matched against the standard names,
/// about 150 instructions a header, the largest cost of reading a response head).
#[derive(Default)]
pub struct NameCache {
    slots: Vec<Option<CachedName>>,
}

#[derive(Clone)]
struct CachedName {
    raw: Box<[u8]>,
    name: HeaderName,
    /// Always hop-by-hop (`headers::is_hop_by_hop`), worked out once with the name.
    hop_by_hop: bool,
}

impl NameCache {
    /// The header name for the raw `name` found at position `index` of a response head, and
    /// whether it is always hop-by-hop.
    fn name(&mut self, index: usize, raw: &[u8]) -> Result<(HeaderName, bool), DirectError> {
        if let Some(Some(seen)) = self.slots.get(index) {
            if *seen.raw == *raw {
                return Ok((seen.name.clone(), seen.hop_by_hop));
            }
        }
        // The order moved (a header more or less than last time): any position will do.
        if let Some(seen) = self.slots.iter().flatten().find(|seen| *seen.raw == *raw) {
            return Ok((seen.name.clone(), seen.hop_by_hop));
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| DirectError::Framing("bad header name"))?;
        let hop_by_hop = headers::is_hop_by_hop(&name);
        if index < MAX_HEADERS {
            if self.slots.len() <= index {
                self.slots.resize(index + 1, None);
            }
            self.slots[index] = Some(CachedName {
                raw: raw.into(),
                name: name.clone(),
                hop_by_hop,
            });
        }
        Ok((name, hop_by_hop))
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The pool of idle keep-alive connections to one plain-http upstream, most recently used first
/// out (it is the one least likely to have been closed by the upstream's keep-alive timeout).
pub struct DirectPool {
    addr: String,
    authority: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    metrics: Option<Arc<CoreMetrics>>,
}

impl DirectPool {
    /// `authority` is the upstream's host:port; it is also the Host sent when a request has none.
    pub fn new(
        authority: &http::uri::Authority,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        metrics: Option<Arc<CoreMetrics>>,
    ) -> Self {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.host()),
        };
        DirectPool {
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            metrics,
        }
    }

    /// Sends a bodiless request and reads the response head. The body reads the same
    /// connection, which returns here when the body has been read to its end.
    /// `added` are the headers the proxy adds (X-Forwarded-*, X-Request-Id), written after the
    /// request's own.
    ///
    /// `now` is the caller's reading of the clock, taken just before (it ages the pooled
    /// connections; one clock read fewer per request).
    pub async fn send(
        self: &Arc<Self>,
        parts: &request::Parts,
        added: Option<&ForwardHeaders>,
        now: Instant,
    ) -> Result<Response<DirectBody>, DirectError> {
        let head = encode_head(parts, added, &self.authority);
        let is_head = parts.method == Method::HEAD;
        // A reused connection may have been closed by the upstream a moment ago; a request that
        // never got an answer on it is tried once more on a new connection if resending it is
        // safe (RFC 9110 §9.2.2), as nginx's proxy_next_upstream does.
        let mut may_retry = true;
        loop {
            // The second try always opens a new connection: after an upstream restart every
            // pooled one may be dead.
            let pooled = if may_retry { self.checkout(now) } else { None };
            let (mut conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: a new connection is the rare case, and its future would otherwise
                // grow every request's.
                None => (Box::pin(self.connect()).await?, false),
            };
            match exchange(&mut conn, &head, is_head).await {
                Ok((parts, framing, keep_alive)) => {
                    let mut body = DirectBody {
                        conn: Some(conn),
                        pool: self.clone(),
                        framing,
                        keep_alive,
                    };
                    // Read whole with its head: the connection is idle again, and is aged from
                    // the request's start rather than by another clock read (a connection is
                    // retired a request's duration early at worst, never late).
                    body.finish_if_done(Some(now));
                    return Ok(Response::from_parts(parts, body));
                }
                Err(Exchange::Stale { written }) if reused && may_retry => {
                    if written && !is_idempotent(&parts.method) {
                        return Err(DirectError::ClosedBeforeAnswer);
                    }
                    may_retry = false;
                    if let Some(m) = &self.metrics {
                        m.upstream_retries.inc();
                    }
                }
                Err(Exchange::Stale { .. }) => return Err(DirectError::ClosedBeforeAnswer),
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, DirectError> {
        let started = Instant::now();
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
        {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => {
                return Err(DirectError::Connect {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(DirectError::ConnectTimeout {
                    addr: self.addr.clone(),
                    timeout: self.connect_timeout,
                })
            }
        };
        io.set_nodelay(true)?;
        if let Some(m) = &self.metrics {
            m.upstream_connect.observe(started.elapsed().as_secs_f64());
        }
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            names: NameCache::default(),
        })
    }

    /// The most recently used idle connection that is still open and fresh.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout
                && still_open(&entry.conn.io)
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection to the pool, idle since `since` (the clock is read when None).
    fn checkin(&self, conn: Conn, since: Option<Instant>) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(Idle {
                    conn,
                    since: since.unwrap_or_else(Instant::now),
                });
            }
        }
    }

    /// Closes idle connections that timed out or that the upstream closed; returns how many
    /// were closed. Called from the housekeeping task, so sockets the upstream closed do not
    /// linger in CLOSE_WAIT until the next request.
    pub fn reap(&self) -> usize {
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        let before = idle.len();
        idle.retain(|e| e.since.elapsed() < self.idle_timeout && still_open(&e.conn.io));
        before - idle.len()
    }
}

/// An idle connection must have nothing to read: data or end-of-file there means the upstream
/// closed it (or sent garbage). Readiness is what the reactor last saw, so this costs a system
/// call only when the reactor says readable.
fn still_open(io: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The request head in HTTP/1.1 form. Header names are already lower case (as hyper sends them).
pub fn encode_head(
    parts: &request::Parts,
    added: Option<&ForwardHeaders>,
    authority: &HeaderValue,
) -> Vec<u8> {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut size =
        parts.method.as_str().len() + target.len() + 64 + added.map_or(0, |a| a.encoded_len());
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_host = match added {
        Some(added) => added.request_has_host(),
        None => parts.headers.contains_key(header::HOST),
    };
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        // The body is empty whatever the client's framing said.
        if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(added) = added {
        added.write_to(&mut out);
    }
    // Methods that normally carry a body say it is empty, as hyper does.
    if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

enum Exchange {
    /// The connection was closed or reset before any byte of an answer arrived; `written`
    /// says whether the request had been handed to the kernel.
    Stale {
        written: bool,
    },
    Failed(DirectError),
}

fn stale_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    is_head: bool,
) -> Result<(http::response::Parts, Framing, bool), Exchange> {
    if let Err(e) = conn.io.write_all(head).await {
        return Err(if stale_kind(&e) {
            Exchange::Stale { written: false }
        } else {
            Exchange::Failed(e.into())
        });
    }
    let mut got_any = false;
    loop {
        // Interim answers (100, 102, 103) are read past; a 101 is never asked for on this path.
        let (parts, len) = loop {
            if !conn.buf.is_empty() {
                match parse_head(&conn.buf, &mut conn.names) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) => {}
                    Err(e) => return Err(Exchange::Failed(e)),
                }
                if conn.buf.len() >= MAX_HEAD {
                    return Err(Exchange::Failed(DirectError::HeadTooLarge));
                }
            }
            conn.buf.reserve(READ_CHUNK);
            match poll_fn(|cx| {
                tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
            })
            .await
            {
                Ok(0) if !got_any => return Err(Exchange::Stale { written: true }),
                Ok(0) => {
                    return Err(Exchange::Failed(DirectError::Framing(
                        "connection closed inside the response head",
                    )))
                }
                Ok(_) => got_any = true,
                Err(e) if !got_any && stale_kind(&e) => {
                    return Err(Exchange::Stale { written: true })
                }
                Err(e) => return Err(Exchange::Failed(e.into())),
            }
        };
        let head_bytes = conn.buf.split_to(len).freeze();
        let status = parts.status;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Exchange::Failed(DirectError::Framing(
                    "a protocol switch nobody asked for",
                )));
            }
            continue;
        }
        let mut response = build_parts(&parts, &head_bytes).map_err(Exchange::Failed)?;
        let (framing, keep_alive) =
            framing(&parts, &mut response, is_head).map_err(Exchange::Failed)?;
        return Ok((response, framing, keep_alive));
    }
}

/// Parses a complete response head as the direct path does (for benches and tests): the
/// response parts, the head's length and whether the connection may be reused after the body.
/// None when `buf` holds no complete head yet.
/// `names` is the connection's name cache (a fresh one for a first response).
pub fn parse_response_head(
    buf: &Bytes,
    is_head: bool,
    names: &mut NameCache,
) -> Result<Option<(http::response::Parts, usize, bool)>, DirectError> {
    let Some((parsed, len)) = parse_head(buf, names)? else {
        return Ok(None);
    };
    let mut parts = build_parts(&parsed, &buf.slice(..len))?;
    let (_, keep_alive) = framing(&parsed, &mut parts, is_head)?;
    Ok(Some((parts, len, keep_alive)))
}

/// What `httparse` found, with header positions kept as offsets so values can share the head's
/// bytes instead of being copied. Hop-by-hop headers (and those `Connection` names) are read for
/// framing here and never enter the header map: they would only be removed again before the
/// client sees the answer.
struct ParsedHead {
    status: StatusCode,
    version: Version,
    headers: Vec<(HeaderName, std::ops::Range<usize>)>,
    /// `Connection` listed `close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// Transfer-Encoding was present; whether its codings were exactly `chunked`.
    transfer_encoding: Option<bool>,
}

fn parse_head(
    buf: &[u8],
    names: &mut NameCache,
) -> Result<Option<(ParsedHead, usize)>, DirectError> {
    // Left uninitialised: httparse fills only what it finds (4 KiB of empty headers would be
    // written on every response otherwise).
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(DirectError::Parse(e)),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| DirectError::Framing("bad status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (mut close, mut keep_alive) = (false, false);
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let mut named: Vec<HeaderName> = Vec::new();
    let mut codings: Option<(usize, bool)> = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(|t| t.trim_ascii()) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let (count, chunked) = codings.get_or_insert((0, false));
            for coding in h.value.split(|b| *b == b',').map(|c| c.trim_ascii()) {
                if !coding.is_empty() {
                    *count += 1;
                    *chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        }
    }
    let base = buf.as_ptr() as usize;
    let mut headers = Vec::with_capacity(response.headers.len());
    for (index, h) in response.headers.iter().enumerate() {
        let (name, hop_by_hop) = names.name(index, h.name.as_bytes())?;
        if hop_by_hop || named.contains(&name) {
            continue;
        }
        let start = h.value.as_ptr() as usize - base;
        headers.push((name, start..start + h.value.len()));
    }
    Ok(Some((
        ParsedHead {
            status,
            version,
            headers,
            close,
            keep_alive,
            transfer_encoding: codings.map(|(count, chunked)| count == 1 && chunked),
        },
        len,
    )))
}

thread_local! {
    /// Header maps of finished requests, for the next response heads read on this thread.
    /// hyper reads a connection's next request into the map of its last response, so every
    /// request's map was a response map; handed back here (cleared, allocation kept) it saves
    /// the two allocations and two frees of a new map per request.
    static SPARE_MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare maps are kept per thread.
const SPARE_MAPS_KEPT: usize = 16;

/// Hands a request's header map back for reuse once nothing reads it any more.
pub fn recycle_header_map(mut map: HeaderMap) {
    // A map too small to be worth keeping (or a huge one) is simply dropped.
    if !(16..=256).contains(&map.capacity()) {
        return;
    }
    map.clear();
    SPARE_MAPS.with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.len() < SPARE_MAPS_KEPT {
                spare.push(map);
            }
        }
    });
}

/// An empty map with room for `needed` headers and a browser's next request: a recycled one
/// when there is one.
fn spare_header_map(needed: usize) -> HeaderMap {
    let spare = SPARE_MAPS.with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()));
    match spare {
        Some(mut map) => {
            map.reserve(needed);
            map
        }
        None => HeaderMap::with_capacity(needed.max(17)),
    }
}

fn build_parts(parsed: &ParsedHead, head: &Bytes) -> Result<http::response::Parts, DirectError> {
    // Room for what the proxy adds (X-Request-Id); see `spare_header_map` for the rest.
    let mut map = spare_header_map(parsed.headers.len() + 1);
    for (name, range) in &parsed.headers {
        let value = HeaderValue::from_maybe_shared(head.slice(range.clone()))
            .map_err(|_| DirectError::Framing("bad header value"))?;
        map.append(name.clone(), value);
    }
    let mut response = Response::new(());
    *response.status_mut() = parsed.status;
    *response.version_mut() = parsed.version;
    *response.headers_mut() = map;
    Ok(response.into_parts().0)
}

/// How the body is delimited, and whether the connection may be reused afterwards. With
/// Transfer-Encoding, a Content-Length is removed from `parts` (RFC 9112 §6.3: it must not reach
/// the client beside a re-framed body).
fn framing(
    parsed: &ParsedHead,
    parts: &mut http::response::Parts,
    is_head: bool,
) -> Result<(Framing, bool), DirectError> {
    let mut keep_alive = match parts.version {
        Version::HTTP_10 => parsed.keep_alive && !parsed.close,
        _ => !parsed.close,
    };
    let no_body = is_head
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = content_length(&parts.headers)?;
    if no_body {
        return Ok((Framing::Done, keep_alive));
    }
    if let Some(only_chunked) = parsed.transfer_encoding {
        if length.is_some() {
            keep_alive = false;
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        // Transfer-Encoding is hop-by-hop and never reaches the client, so a coding other than
        // chunked alone (gzip, or gzip under chunked) could not be undone by the client:
        // refused, as hyper's client refuses it.
        if !only_chunked {
            return Err(DirectError::Framing("a transfer coding other than chunked"));
        }
        return Ok((Framing::Chunked(Chunk::Size), keep_alive));
    }
    match length {
        Some(0) => Ok((Framing::Done, keep_alive)),
        Some(n) => Ok((Framing::Fixed(n), keep_alive)),
        None => Ok((Framing::Close, false)),
    }
}

/// The Content-Length, when present: every value (and every item of a list) must be the same
/// number, or the response cannot be framed safely (RFC 9112 §6.3 item 5).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, DirectError> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| DirectError::Framing("bad Content-Length"))?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) || item.len() > 19 {
                return Err(DirectError::Framing("bad Content-Length"));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| DirectError::Framing("bad Content-Length"))?;
            match found {
                Some(prev) if prev != n => {
                    return Err(DirectError::Framing("conflicting Content-Length values"))
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The body has been read to its end.
    Done,
    /// This many bytes are left.
    Fixed(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Inside the trailer section; the count is the trailer bytes seen so far.
    Trailers(usize),
}

/// A response body read straight from the upstream connection, which goes back to the pool
/// when the body ends cleanly and is closed when the body is dropped early.
pub struct DirectBody {
    conn: Option<Conn>,
    pool: Arc<DirectPool>,
    framing: Framing,
    keep_alive: bool,
}

impl DirectBody {
    fn finish_if_done(&mut self, now: Option<Instant>) {
        if self.framing != Framing::Done {
            return;
        }
        if let Some(conn) = self.conn.take() {
            // Bytes after the end of the answer mean the upstream and we disagree on framing.
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.checkin(conn, now);
            }
        }
    }

    /// Reads more from the upstream. Ready(Ok(false)) is end-of-file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, DirectError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
            conn.buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(true)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }

    /// Reads more for `poll_frame`: None when data came (decode again), otherwise what
    /// `poll_frame` returns. At end-of-file the body ends, with the error `at_eof` when the
    /// framing said more was due; any end drops the connection.
    #[allow(clippy::type_complexity)]
    fn read_more(
        &mut self,
        cx: &mut Context<'_>,
        at_eof: Option<&'static str>,
    ) -> Option<Poll<Option<Result<Frame<Bytes>, DirectError>>>> {
        let end = match self.poll_fill(cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(Ok(true)) => return None,
            Poll::Ready(Ok(false)) => at_eof.map(|msg| Err(DirectError::Framing(msg))),
            Poll::Ready(Err(e)) => Some(Err(e)),
        };
        self.conn = None;
        self.framing = Framing::Done;
        Some(Poll::Ready(end))
    }

    /// True when the rest of the body has already been read: polling it can never wait (most
    /// small answers arrive with their head), so it needs no idle timer.
    pub fn is_buffered_to_end(&self) -> bool {
        match self.framing {
            Framing::Done => true,
            Framing::Fixed(left) => self.buffered() as u64 >= left,
            _ => false,
        }
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.buf.len())
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.conn.as_mut() {
            Some(conn) => conn.buf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }

    /// One step of chunked decoding over what is buffered: Some(frame data) when chunk data is
    /// available, None when more input is needed or a state changed (the caller loops).
    fn step_chunked(&mut self, state: Chunk) -> Result<Option<Bytes>, DirectError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(DirectError::Framing("chunked body without a connection"));
        };
        let buf = &mut conn.buf;
        match state {
            Chunk::Size => {
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(DirectError::Framing("chunk size line too long"));
                    }
                    return Ok(None);
                };
                let size = parse_chunk_size(&buf[..line_end])?;
                buf.advance(line_end + 2);
                self.framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(None)
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(data))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(DirectError::Framing("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers(seen) => {
                // Trailer fields are not passed on (hyper's client path drops them too).
                let Some(line_end) = find_crlf(buf) else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err(DirectError::Framing("trailer section too long"));
                    }
                    return Ok(None);
                };
                buf.advance(line_end + 2);
                self.framing = if line_end == 0 {
                    Framing::Done
                } else {
                    Framing::Chunked(Chunk::Trailers(seen + line_end + 2))
                };
                Ok(None)
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line: hex digits, then optional chunk extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, DirectError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits_end..];
    if digits_end == 0 || digits_end > 15 {
        return Err(DirectError::Framing("bad chunk size"));
    }
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if !rest_ok {
        return Err(DirectError::Framing("bad chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| DirectError::Framing("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| DirectError::Framing("bad chunk size"))
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = DirectError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DirectError>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Fixed(left) => {
                    let buffered = this.buffered();
                    if buffered > 0 {
                        let n = (buffered as u64).min(left) as usize;
                        let data = this.take(n);
                        let left = left - n as u64;
                        this.framing = if left == 0 {
                            Framing::Done
                        } else {
                            Framing::Fixed(left)
                        };
                        this.finish_if_done(None);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Some(out) = this.read_more(
                        cx,
                        Some("the upstream closed the connection inside the body"),
                    ) {
                        return out;
                    }
                }
                Framing::Chunked(state) => match this.step_chunked(state) {
                    Err(e) => {
                        this.conn = None;
                        this.framing = Framing::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {
                        if this.framing == Framing::Done {
                            this.finish_if_done(None);
                            return Poll::Ready(None);
                        }
                        if this.framing != Framing::Chunked(state) {
                            continue;
                        }
                        if let Some(out) = this.read_more(
                            cx,
                            Some("the upstream closed the connection inside a chunked body"),
                        ) {
                            return out;
                        }
                    }
                },
                Framing::Close => {
                    let buffered = this.buffered();
                    if buffered > 0 {
                        let data = this.take(buffered);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Here the end of the connection is the end of the body.
                    if let Some(out) = this.read_more(cx, None) {
                        return out;
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Fixed(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn head_is_http11_with_host_and_no_client_framing() {
        let p = parts(
            "GET",
            "/course/view.php?id=2",
            &[
                ("host", "lms.example"),
                ("content-length", "0"),
                ("x-a", "1"),
            ],
        );
        let out = encode_head(&p, None, &HeaderValue::from_static("up:8080"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /course/view.php?id=2 HTTP/1.1\r\nhost: lms.example\r\nx-a: 1\r\n\r\n"
        );
        let p = parts("POST", "/x", &[]);
        let out =
            String::from_utf8(encode_head(&p, None, &HeaderValue::from_static("up:8080"))).unwrap();
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nhost: up:8080\r\ncontent-length: 0\r\n\r\n"
        );
    }

    fn framing_of(head: &str, is_head: bool) -> Result<(Framing, bool), DirectError> {
        let (parsed, len) = parse_head(head.as_bytes(), &mut NameCache::default())
            .unwrap()
            .unwrap();
        let bytes = Bytes::copy_from_slice(&head.as_bytes()[..len]);
        let mut parts = build_parts(&parsed, &bytes).unwrap();
        framing(&parsed, &mut parts, is_head)
    }

    #[test]
    fn framing_follows_rfc9112() {
        use Framing::*;
        let f = |h: &str| framing_of(h, false).unwrap();
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Fixed(5), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            (Done, true)
        );
        assert_eq!(f("HTTP/1.1 204 No\r\n\r\n"), (Done, true));
        assert_eq!(
            f("HTTP/1.1 304 NM\r\ncontent-length: 9\r\n\r\n"),
            (Done, true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).unwrap(),
            (Done, true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Chunked(Chunk::Size), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"),
            (Chunked(Chunk::Size), false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"),
            (Chunked(Chunk::Size), true)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), (Close, false));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            (Fixed(1), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            (Fixed(1), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"),
            (Fixed(1), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\n"),
            (Fixed(4), true)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(framing_of(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_never_enter_the_map() {
        let head = "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                    X-Hop: secret\r\nProxy-Connection: x\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\n";
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        let (parts, len, keep_alive) =
            parse_response_head(&bytes, false, &mut NameCache::default())
                .unwrap()
                .unwrap();
        assert_eq!(len, head.len());
        assert!(keep_alive);
        let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
        // The same answer with `close` is not reused.
        let head = head.replace("Keep-Alive, X-Hop", "close");
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        assert!(
            !parse_response_head(&bytes, false, &mut NameCache::default())
                .unwrap()
                .unwrap()
                .2
        );
    }

    /// Mutated and truncated answer heads: always a clean Ok or Err, never a panic.
    #[test]
    fn mangled_heads_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\
            Transfer-Encoding: chunked\r\nContent-Length: 12, 12\r\nKeep-Alive: timeout=5\r\n\
            Content-Type: text/html\r\n\r\n";
        let specials = b"\r\n:, \t\x00\x7f\xff0123456789-";
        let mut names = NameCache::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d6f6f646c65);
        for _ in 0..20_000 {
            let mut head = seed.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..head.len());
                match rng.random_range(0..3) {
                    0 => head[at] = specials[rng.random_range(0..specials.len())],
                    1 => {
                        head.remove(at);
                    }
                    _ => head.insert(at, specials[rng.random_range(0..specials.len())]),
                }
            }
            head.truncate(rng.random_range(0..=head.len()));
            let bytes = Bytes::from(head);
            let is_head = rng.random_bool(0.1);
            // The connection's name cache, warm with earlier (mangled) heads, never changes
            // what a head means.
            let warm = parse_response_head(&bytes, is_head, &mut names);
            let fresh = parse_response_head(&bytes, is_head, &mut NameCache::default());
            match (warm, fresh) {
                (Ok(Some((a, la, ka))), Ok(Some((b, lb, kb)))) => {
                    assert_eq!(
                        (a.status, &a.headers, la, ka),
                        (b.status, &b.headers, lb, kb)
                    );
                }
                (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
                (a, b) => panic!("cache changed the outcome: {a:?} / {b:?}"),
            }
        }
    }

    /// Mutated chunked bodies read from a real socket: every one ends in data or an error,
    /// never a panic or a hang.
    #[tokio::test]
    async fn mangled_chunked_bodies_end_cleanly() {
        use http_body_util::BodyExt;
        use rand::{Rng, SeedableRng};
        let seed: &[u8] =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        let specials = b"\r\n;0123456789abcdefxX \t";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x63_68_75_6e_6b);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authority: http::uri::Authority = addr.to_string().parse().unwrap();
        let pool = Arc::new(DirectPool::new(
            &authority,
            4,
            Duration::from_secs(30),
            Duration::from_secs(1),
            None,
        ));
        for _ in 0..300 {
            let mut body = seed.to_vec();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..body.len());
                match rng.random_range(0..3) {
                    0 => body[at] = specials[rng.random_range(0..specials.len())],
                    1 => {
                        body.remove(at);
                    }
                    _ => body.insert(at, specials[rng.random_range(0..specials.len())]),
                }
            }
            let client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            server.write_all(&body).await.unwrap();
            server.shutdown().await.unwrap();
            let direct = DirectBody {
                conn: Some(Conn {
                    io: client,
                    buf: BytesMut::new(),
                    names: NameCache::default(),
                }),
                pool: pool.clone(),
                framing: Framing::Chunked(Chunk::Size),
                keep_alive: true,
            };
            let read = tokio::time::timeout(Duration::from_secs(5), direct.collect()).await;
            assert!(
                read.is_ok(),
                "a chunked body hung: {:?}",
                String::from_utf8_lossy(&body)
            );
            drop(server);
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"10;name=value").unwrap(), 16);
        for bad in [&b""[..], b"x", b"-1", b"1x", b"ffffffffffffffff0"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_recycled_header_map_comes_back_empty_with_room() {
        let mut map = HeaderMap::with_capacity(20);
        map.insert(header::HOST, HeaderValue::from_static("lms"));
        map.append(header::COOKIE, HeaderValue::from_static("a=1"));
        recycle_header_map(map);
        let again = spare_header_map(30);
        assert!(again.is_empty());
        assert!(again.capacity() >= 30);
        // Too small to keep: dropped, and a new map is made.
        recycle_header_map(HeaderMap::new());
        assert!(spare_header_map(3).capacity() >= 17);
    }

    #[test]
    fn the_name_cache_never_answers_a_different_name() {
        fn check(cache: &mut NameCache, index: usize, raw: &str) {
            let (got, hop_by_hop) = cache.name(index, raw.as_bytes()).unwrap();
            let expected = HeaderName::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(hop_by_hop, headers::is_hop_by_hop(&expected), "{raw}");
            assert_eq!(got, expected, "{raw}");
        }
        let mut cache = NameCache::default();
        let cache = &mut cache;
        // Learn, hit at the same place, a name moved, a name replaced at a place.
        for (i, raw) in ["Content-Type", "X-A", "Set-Cookie"].iter().enumerate() {
            check(cache, i, raw);
        }
        for (i, raw) in ["Content-Type", "X-A", "Set-Cookie"].iter().enumerate() {
            check(cache, i, raw);
        }
        for (i, raw) in ["X-A", "content-type", "X-B", "Set-Cookie", "X-Ab"]
            .iter()
            .enumerate()
        {
            check(cache, i, raw);
        }
        check(cache, 0, "X-B");
        check(cache, 1, "X-A");
        check(cache, 1, "Connection");
        check(cache, 2, "X-A");
        check(cache, 2, "Keep-Alive");
        check(cache, 200, "x-far");
        assert!(cache.name(0, b"bad name").is_err());
        check(cache, 0, "X-B");
    }

    #[test]
    fn malformed_heads_are_errors_not_panics() {
        for bad in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/9 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                parse_head(bad.as_bytes(), &mut NameCache::default()).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nx: y\r\n", &mut NameCache::default())
                .unwrap()
                .is_none()
        );
    }
}
