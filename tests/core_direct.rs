//! The direct upstream path (src/proxy/direct.rs): bodiless requests to an http:// upstream
//! spoken as HTTP/1.1 inside the request's own task over a pool of keep-alive connections.
//!
//! Every test runs the real binary in front of a scripted raw-TCP upstream that writes exactly
//! the bytes a test wants (chunk extensions, trailers, interim answers, bad framing, early
//! closes) and records every request head with the id of the connection it came on, so the
//! tests can tell which upstream connection carried what.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// a scripted upstream

/// One request head as the scripted upstream read it.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    /// The request target (path and query).
    target: String,
    /// The request line, e.g. "GET / HTTP/1.1".
    line: String,
    /// Header lines in wire order, names as sent.
    headers: Vec<(String, String)>,
    /// Which accepted connection (1, 2, ...) it came on.
    conn: u64,
    /// 1 for the first request on its connection, 2 for the second, ...
    nth: u32,
}

impl Hit {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

/// What the handler wants done with the connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Read the next request head from it.
    Keep,
    /// Close it (drop the socket).
    Close,
}

type Handler = Arc<dyn Fn(&mut TcpStream, &Hit) -> Next + Send + Sync>;

#[derive(Default)]
struct ScriptState {
    accepted: AtomicU64,
    hits: Mutex<Vec<Hit>>,
    /// Connections on which the proxy closed its end (EOF while waiting for a request head).
    closed_by_proxy: Mutex<HashSet<u64>>,
}

/// A raw-TCP upstream: each accepted connection runs on its own thread, reading request heads
/// one after another (every request on this path is bodiless) and handing each to the handler.
/// The health probe (`PROBE_PATH`) is answered here with a small keep-alive 200 and recorded,
/// but never reaches the handler.
struct Scripted {
    addr: SocketAddr,
    state: Arc<ScriptState>,
}

impl Scripted {
    fn start(handler: impl Fn(&mut TcpStream, &Hit) -> Next + Send + Sync + 'static) -> Scripted {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ScriptState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let conn = st.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let st = st.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve_conn(stream, conn, st, handler));
            }
        });
        Scripted { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Every request seen so far, probes included.
    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Requests whose target starts with `prefix`.
    fn hits_for(&self, prefix: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.target.starts_with(prefix))
            .collect()
    }

    /// Requests for exactly `target`.
    fn hits_of(&self, target: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.target == target)
            .collect()
    }

    /// The single request for exactly `target`.
    fn hit(&self, target: &str) -> Hit {
        let hits = self.hits_of(target);
        assert_eq!(hits.len(), 1, "{target} reached the upstream {hits:?}");
        hits.into_iter().next().unwrap()
    }

    fn closed_by_proxy(&self, conn: u64) -> bool {
        self.state.closed_by_proxy.lock().unwrap().contains(&conn)
    }
}

fn serve_conn(mut stream: TcpStream, conn: u64, st: Arc<ScriptState>, handler: Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let mut nth = 0;
    loop {
        let head = read_head(&mut stream);
        if !head.ends_with(b"\r\n\r\n") {
            st.closed_by_proxy.lock().unwrap().insert(conn);
            return;
        }
        nth += 1;
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default().to_string();
        let mut words = line.split(' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        let hit = Hit {
            method,
            target,
            line,
            headers,
            conn,
            nth,
        };
        st.hits.lock().unwrap().push(hit.clone());
        if hit.target == PROBE_PATH {
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
            continue;
        }
        if handler(&mut stream, &hit) == Next::Close {
            return;
        }
    }
}

/// Writes `bytes`, ignoring errors (the proxy may have given up on the connection).
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// Writes the pieces one by one with a short pause in between, so the proxy sees them in
/// separate reads.
fn send_pieces(s: &mut TcpStream, pieces: &[&[u8]]) {
    for piece in pieces {
        send(s, piece);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A keep-alive 200 whose body is the request target.
fn ok_echo_target(s: &mut TcpStream, hit: &Hit) {
    let body = hit.target.as_bytes();
    send(
        s,
        &[
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat(),
    );
}

// ---------------------------------------------------------------------------------------------
// the proxy and the client side

/// The proxy in front of `up`; the health probe runs once at start (its connection lands in the
/// pool) and then only every hour, so it does not add connections during a test.
fn proxy_for(up: &Scripted, tweak: impl FnOnce(&mut serde_json::Value)) -> Proxy {
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["upstream"]["health_check"]["interval"] = json!("1h");
        tweak(c);
    });
    proxy.wait_ready();
    proxy
}

/// A response read to the end of the connection, with what its framing says about it.
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, de-chunked when chunked.
    body: Vec<u8>,
    /// The bytes after the head, as they came.
    raw_body: Vec<u8>,
    /// The body ended where its framing said it would (a close-delimited body always does).
    complete: bool,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("raw_body_len", &self.raw_body.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request (`head_lines` are extra header lines, each ending in \r\n) with
/// `Connection: close` and reads the answer until the proxy closes the connection. Panics if no
/// response head arrives, or if nothing ends within 10 s (a hang).
fn fetch(addr: SocketAddr, method: &str, target: &str, head_lines: &str) -> Fetched {
    try_fetch(addr, method, target, head_lines).unwrap_or_else(|raw| {
        panic!(
            "{method} {target}: no response head, got {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// As [`fetch`], but a connection that ends before a whole response head is an Err with what
/// did arrive.
fn try_fetch(
    addr: SocketAddr,
    method: &str,
    target: &str,
    head_lines: &str,
) -> Result<Fetched, Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: lms.test\r\n{head_lines}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut reset = false;
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "{method} {target}: the proxy neither finished nor closed within 10 s; got {:?}",
                    String::from_utf8_lossy(&raw)
                )
            }
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    let Some(end) = find(&raw, b"\r\n\r\n") else {
        return Err(raw);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let raw_body = raw[end + 4..].to_vec();
    let mut fetched = Fetched {
        status,
        headers,
        body: Vec::new(),
        raw_body: raw_body.clone(),
        complete: false,
    };
    let bodiless = method == "HEAD" || status == 204 || status == 304 || status < 200;
    if bodiless {
        fetched.complete = raw_body.is_empty();
    } else if fetched
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        match parse_response(&raw) {
            Some(r) => {
                fetched.body = r.body;
                fetched.complete = true;
            }
            None => fetched.body = raw_body,
        }
    } else if let Some(len) = fetched.header("content-length") {
        let len: usize = len.parse().expect("numeric Content-Length from the proxy");
        fetched.complete = raw_body.len() == len;
        fetched.body = raw_body;
    } else {
        fetched.complete = !reset;
        fetched.body = raw_body;
    }
    Ok(fetched)
}

fn fetch_get(addr: SocketAddr, target: &str) -> Fetched {
    fetch(addr, "GET", target, "")
}

/// A GET that must come back as a whole 200 whose body is `target` (the `ok_echo_target`
/// answer).
fn assert_good(proxy: &Proxy, target: &str) {
    let r = fetch_get(proxy.addr(), target);
    assert_eq!(r.status, 200, "{target}: {r:?}");
    assert!(r.complete, "{target}: {r:?}");
    assert_eq!(r.text(), target);
}

// ---------------------------------------------------------------------------------------------
// 1. keep-alive reuse

#[test]
fn sequential_gets_reuse_one_upstream_connection() {
    let up = Scripted::start(|s, hit| {
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    for i in 0..50 {
        // Each on a new client connection, through common::get.
        let path = format!("/ka/{i}");
        let resp = get(proxy.addr(), &path, "");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), path);
    }
    let hits = up.hits_for("/ka/");
    assert_eq!(hits.len(), 50, "each request reached the upstream once");
    let conns: HashSet<u64> = hits.iter().map(|h| h.conn).collect();
    assert!(
        conns.len() <= 2,
        "50 sequential GETs used {} upstream connections",
        conns.len()
    );
    assert!(
        up.accepted() <= 3,
        "{} upstream connections accepted",
        up.accepted()
    );

    // A client keep-alive connection with several requests on it: still one upstream connection.
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    for i in 0..10 {
        raw.send(format!("GET /ka2/{i} HTTP/1.1\r\nHost: lms.test\r\n\r\n").as_bytes())
            .unwrap();
        let resp = raw.read_response().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), format!("/ka2/{i}"));
    }
    let conns2: HashSet<u64> = up.hits_for("/ka2/").iter().map(|h| h.conn).collect();
    assert!(conns2.len() <= 2, "{conns2:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. chunked responses

#[test]
fn chunked_response_with_extensions_and_trailers_arrives_whole_and_the_connection_is_reused() {
    let up = Scripted::start(|s, hit| {
        match hit.target.as_str() {
            "/chunked" => send_pieces(
                s,
                &[
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
                      Trailer: X-Checksum\r\n\r\n",
                    b"5;name=value\r\nhel",
                    b"lo\r",
                    b"\n1",
                    b"0 ;ext\r\n0123456789abcdef\r\n",
                    b"A;a;b=\"q\"\r\nABCDEFGHIJ\r\n3\r\n!!!\r\n",
                    b"0;last\r\nX-Checksum: abc\r\n",
                    b"X-Other: y\r\n\r\n",
                ],
            ),
            _ => ok_echo_target(s, hit),
        }
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    for round in 0..2 {
        let r = fetch_get(proxy.addr(), "/chunked");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.complete, "round {round}: {r:?}");
        assert_eq!(r.text(), "hello0123456789abcdefABCDEFGHIJ!!!");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_good(&proxy, &format!("/after-chunked/{round}"));
    }
    let first = &up.hits_for("/chunked")[0];
    let after = up.hit("/after-chunked/0");
    assert_eq!(
        first.conn, after.conn,
        "the request after a chunked body reuses its connection"
    );
    assert_eq!(after.nth, first.nth + 1);
}

// ---------------------------------------------------------------------------------------------
// 3. close-delimited responses

#[test]
fn close_delimited_response_arrives_whole_and_the_next_request_opens_a_new_connection() {
    let up = Scripted::start(|s, hit| {
        if hit.target.starts_with("/until-close") {
            send_pieces(
                s,
                &[
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
                    b"first part, ",
                    &pattern(0, 100_000),
                    b", last part",
                ],
            );
            return Next::Close;
        }
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    let mut expected = b"first part, ".to_vec();
    expected.extend_from_slice(&pattern(0, 100_000));
    expected.extend_from_slice(b", last part");
    for round in 0..3 {
        let r = fetch_get(proxy.addr(), &format!("/until-close/{round}"));
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert!(r.complete, "round {round}: {:?}", r.headers);
        assert_eq!(r.body.len(), expected.len());
        assert!(r.body == expected, "round {round}: the body differs");
        assert_good(&proxy, &format!("/after-close/{round}"));
        let closed = up.hit(&format!("/until-close/{round}"));
        let next = up.hit(&format!("/after-close/{round}"));
        assert_ne!(closed.conn, next.conn, "a closed connection was reused");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. bodiless answers: HEAD, 204, 304

#[test]
fn head_204_and_304_carry_no_body_and_keep_the_connection() {
    let up = Scripted::start(|s, hit| {
        match hit.target.as_str() {
            "/head" => send(
                s,
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
            ),
            "/nocontent" => send(s, b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
            "/notmodified" => send(
                s,
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 9\r\n\r\n",
            ),
            _ => ok_echo_target(s, hit),
        }
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});

    let r = fetch(proxy.addr(), "HEAD", "/head", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.raw_body.is_empty(), "a HEAD answer had a body: {r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("1234"), "{r:?}");
    assert_good(&proxy, "/after-head");

    let r = fetch_get(proxy.addr(), "/nocontent");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.raw_body.is_empty(), "{r:?}");
    assert_eq!(r.header("x-a"), Some("1"));
    assert_good(&proxy, "/after-204");

    let r = fetch(
        proxy.addr(),
        "GET",
        "/notmodified",
        "If-None-Match: \"v1\"\r\n",
    );
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.raw_body.is_empty(), "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_good(&proxy, "/after-304");

    for (bodiless, after) in [
        ("/head", "/after-head"),
        ("/nocontent", "/after-204"),
        ("/notmodified", "/after-304"),
    ] {
        let (a, b) = (up.hit(bodiless), up.hit(after));
        assert_eq!(
            (a.conn, a.nth + 1),
            (b.conn, b.nth),
            "the request after {bodiless} went on the same connection, right after it"
        );
    }
    assert_eq!(up.hit("/head").method, "HEAD");
}

// ---------------------------------------------------------------------------------------------
// 5. interim answers

#[test]
fn interim_responses_are_skipped() {
    let up = Scripted::start(|s, hit| {
        match hit.target.as_str() {
            "/interim" => send_pieces(
                s,
                &[
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n",
                    b"Link: </style.css>; rel=preload\r\n\r\n",
                    b"HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal",
                ],
            ),
            _ => ok_echo_target(s, hit),
        }
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    for round in 0..2 {
        let r = fetch_get(proxy.addr(), "/interim");
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.complete, "{r:?}");
        assert_eq!(r.header("x-final"), Some("yes"));
        assert_eq!(r.text(), "final");
        assert_good(&proxy, &format!("/after-interim/{round}"));
    }
    let first = &up.hits_for("/interim")[0];
    let after = up.hit("/after-interim/0");
    assert_eq!(first.conn, after.conn);
}

// ---------------------------------------------------------------------------------------------
// 6. stale pooled connections and retries

#[test]
fn an_upstream_closing_after_every_answer_never_causes_a_502() {
    // Answers with a Content-Length and no "Connection: close", then closes at once (or a moment
    // later), like a server whose keep-alive timeout is tiny.
    let up = Scripted::start(|s, hit| {
        ok_echo_target(s, hit);
        if hit.target.starts_with("/late/") {
            std::thread::sleep(Duration::from_millis(20));
        }
        Next::Close
    });
    let proxy = proxy_for(&up, |_| {});
    for i in 0..30 {
        assert_good(&proxy, &format!("/now/{i}"));
    }
    for i in 0..10 {
        assert_good(&proxy, &format!("/late/{i}"));
        std::thread::sleep(Duration::from_millis(40));
    }
    for i in 0..30 {
        // Never more than the one retry on a fresh connection.
        let target = format!("/now/{i}");
        let sent = up.hits_of(&target).len();
        assert!(sent <= 2, "{target} was sent {sent} times");
    }
}

/// The first request on every connection is answered; any later one is read and then the
/// connection is closed without an answer (as when a keep-alive timeout fires just as a request
/// arrives).
fn answer_only_the_first_request(s: &mut TcpStream, hit: &Hit) -> Next {
    // `nth` counts the health probe too: a connection the probe opened drops its next request.
    if hit.nth == 1 {
        if hit.target.starts_with("/hold/") {
            std::thread::sleep(Duration::from_millis(300));
        }
        ok_echo_target(s, hit);
        Next::Keep
    } else {
        Next::Close
    }
}

#[test]
fn idempotent_requests_are_retried_once_and_a_bodiless_post_is_never_resent() {
    let up = Scripted::start(answer_only_the_first_request);
    let proxy = proxy_for(&up, |_| {});
    for i in 0..10 {
        // Each lands on the pooled connection of the one before, is dropped there, and is
        // sent again on a new connection.
        let target = format!("/get/{i}");
        assert_good(&proxy, &target);
        let hits = up.hits_of(&target);
        assert_eq!(hits.len(), 2, "{target}: one try and one retry: {hits:?}");
        assert!(
            hits[0].nth >= 2,
            "{target}: the first try was on a pooled connection"
        );
        assert_eq!(
            hits[1].nth, 1,
            "{target}: the retry was on a new connection"
        );
    }

    // A pooled connection is there now (the last GET's); the POST goes on it and is dropped.
    let r = fetch(proxy.addr(), "POST", "/post-once", "Content-Length: 0\r\n");
    let posts = up.hits_for("/post-once");
    assert_eq!(
        posts.len(),
        1,
        "a POST whose connection closed after the request was read was sent again \
         (client got {})",
        r.status
    );
    assert!(posts[0].nth >= 2, "the POST went on a reused connection");
    assert_eq!(
        r.status, 502,
        "the POST got no answer from the upstream: {r:?}"
    );
    assert_good(&proxy, "/after-post");
}

#[test]
fn a_retry_uses_a_new_connection_even_when_more_idle_ones_are_pooled() {
    let up = Scripted::start(answer_only_the_first_request);
    let proxy = proxy_for(&up, |_| {});
    // Three requests at once, each held 300 ms by the upstream: three connections, each of
    // which has answered once and will drop the next request it gets.
    let addr = proxy.addr();
    let threads: Vec<_> = (0..3)
        .map(|i| std::thread::spawn(move || fetch_get(addr, &format!("/hold/{i}"))))
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The first try lands on a pooled connection, which drops it; the retry must not take
    // another pooled connection (it would be dropped too), but a new one.
    for i in 0..3 {
        let target = format!("/after-hold/{i}");
        let r = fetch_get(proxy.addr(), &target);
        let hits = up.hits_of(&target);
        assert_eq!(
            r.status,
            200,
            "{target}: tried on connections {:?} (nth {:?}): {r:?}",
            hits.iter().map(|h| h.conn).collect::<Vec<_>>(),
            hits.iter().map(|h| h.nth).collect::<Vec<_>>(),
        );
        assert_eq!(hits.len(), 2, "{target}: one try and one retry: {hits:?}");
        assert!(
            hits[0].nth >= 2,
            "{target}: the first try was on a pooled connection"
        );
        assert_eq!(
            hits[1].nth, 1,
            "{target}: the retry was on a new connection"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. bad framing

/// Bad answers by path; `/good...` gets a proper one. Every bad answer closes its connection.
fn bad_framing(s: &mut TcpStream, hit: &Hit) -> Next {
    let target = hit.target.as_str();
    let bytes: Vec<u8> = match target {
        "/cl-conflict" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()
        }
        "/cl-list-conflict" => b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!".to_vec(),
        "/cl-nonnumeric" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello".to_vec(),
        "/cl-negative" => b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello".to_vec(),
        "/status-words" => b"HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/status-4digits" => b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/status-proto" => b"HTXP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/status-garbage" => b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        "/status-101" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec(),
        "/huge-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..3 {
                head.extend_from_slice(format!("X-Big-{i}: ").as_bytes());
                head.extend_from_slice(&[b'a'; 30_000]);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            head
        }
        "/endless-head" => {
            // A header block that never ends.
            send(s, b"HTTP/1.1 200 OK\r\n");
            for i in 0..10_000 {
                if s.write_all(format!("X-H{i}: {}\r\n", "b".repeat(100)).as_bytes())
                    .is_err()
                {
                    break;
                }
            }
            return Next::Close;
        }
        "/many-headers" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..300 {
                head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            head
        }
        "/bad-chunk-size" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n"
                .to_vec()
        }
        "/chunk-no-crlf" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n"
                .to_vec()
        }
        "/head-cut" => b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
        _ => {
            ok_echo_target(s, hit);
            return Next::Keep;
        }
    };
    send(s, &bytes);
    // Wait for the proxy to give up on the connection (or 2 s), so it cannot be mistaken for
    // an early close on our side.
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 1024];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    Next::Close
}

#[test]
fn bad_framing_from_the_upstream_gives_502_and_the_proxy_keeps_serving() {
    let up = Scripted::start(bad_framing);
    let proxy = proxy_for(&up, |_| {});
    for target in [
        "/cl-conflict",
        "/cl-list-conflict",
        "/cl-nonnumeric",
        "/cl-negative",
        "/status-words",
        "/status-4digits",
        "/status-proto",
        "/status-garbage",
        "/status-101",
        "/huge-head",
        "/endless-head",
        "/many-headers",
        "/head-cut",
    ] {
        let r = fetch_get(proxy.addr(), target);
        assert_eq!(r.status, 502, "{target}: {:?} {:?}", r.headers, r.text());
        assert_good(&proxy, &format!("/good{target}"));
    }
    let mut proxy = proxy;
    proxy.assert_running();
    assert!(
        proxy
            .metric("moodle_edge_upstream_errors_total{kind=\"protocol\"}")
            .unwrap_or(0.0)
            >= 13.0,
        "the bad answers count as protocol errors"
    );
}

#[test]
fn a_bad_chunk_aborts_the_response_and_the_proxy_keeps_serving() {
    let up = Scripted::start(bad_framing);
    let proxy = proxy_for(&up, |_| {});
    for target in ["/bad-chunk-size", "/chunk-no-crlf"] {
        // The good first chunk means the head may go out before the bad framing is read: the
        // body must then end short (no last chunk); either way never a complete answer.
        let answer = try_fetch(proxy.addr(), "GET", target, "");
        assert!(
            !answer.as_ref().is_ok_and(|r| r.complete),
            "{target}: a badly chunked body arrived as a complete one: {answer:?}"
        );
        assert_good(&proxy, &format!("/good{target}"));
    }
    let mut proxy = proxy;
    proxy.assert_running();
}

// ---------------------------------------------------------------------------------------------
// 8. an upstream closing mid-body

#[test]
fn an_upstream_closing_mid_body_truncates_the_response() {
    let up = Scripted::start(|s, hit| {
        if hit.target.starts_with("/cut") {
            send(
                s,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                  Content-Length: 100000\r\n\r\n",
            );
            send(s, &pattern(0, 1000));
            return Next::Close;
        }
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    for round in 0..3 {
        let target = format!("/cut/{round}");
        match try_fetch(proxy.addr(), "GET", &target, "") {
            Ok(r) if r.status == 200 => {
                assert!(!r.complete, "{target}: a cut body arrived as whole: {r:?}");
                assert!(r.body.len() < 100_000);
                assert!(
                    r.header("content-length").is_some() || r.header("transfer-encoding").is_some(),
                    "{target}: the cut body was sent close-delimited, so the cut cannot show: {r:?}"
                );
            }
            Ok(r) => assert_eq!(r.status, 502, "{target}: {r:?}"),
            // Aborted before the head was flushed: also not a complete answer.
            Err(raw) => assert!(
                raw.is_empty(),
                "{target}: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
        assert_good(&proxy, &format!("/after-cut/{round}"));
    }
    let line = proxy.access_line_for("/cut/0");
    assert_eq!(line["complete"], false, "{line}");
    let mut proxy = proxy;
    proxy.assert_running();
}

// ---------------------------------------------------------------------------------------------
// 9. bytes after the end of an answer

/// Answers whose connection must not go back to the pool; anything else gets a good answer.
fn not_reusable(s: &mut TcpStream, hit: &Hit) -> Next {
    match hit.target.as_str() {
        // All in one write, so the proxy sees the surplus with the body.
        "/garbage" => send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\
              Content-Length: 7\r\n\r\nsmuggle",
        ),
        // Transfer-Encoding wins over Content-Length, and such a connection is not reused
        // (RFC 9112 §6.3 items 3 and 4).
        "/te-and-cl" => send(
            s,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        // The upstream said it will close; the socket stays open here all the same.
        "/conn-close" => send(
            s,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        ),
        // HTTP/1.0 without keep-alive.
        "/http10" => send(s, b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        // A (broken) answer to HEAD with a body: the body is surplus.
        "/head-body" => send(s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        _ => ok_echo_target(s, hit),
    }
    Next::Keep
}

/// The request after `target` went on another connection, and the proxy closed `target`'s.
fn assert_not_reused(proxy: &Proxy, up: &Scripted, target: &str) {
    let after = format!("/after{target}");
    assert_good(proxy, &after);
    let (bad, next) = (up.hit(target), up.hit(&after));
    assert_ne!(
        bad.conn, next.conn,
        "{target}: its connection was reused for the next request"
    );
    wait_for(
        &format!("the proxy to close the connection of {target}"),
        Duration::from_secs(5),
        || up.closed_by_proxy(bad.conn),
    );
    assert!(
        up.hits()
            .iter()
            .all(|h| h.conn != bad.conn || h.nth <= bad.nth),
        "{target}: another request went on its connection"
    );
}

#[test]
fn bytes_after_the_end_of_an_answer_keep_the_connection_out_of_the_pool() {
    let up = Scripted::start(not_reusable);
    let proxy = proxy_for(&up, |_| {});
    let r = fetch_get(proxy.addr(), "/garbage");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.complete, "{r:?}");
    assert_eq!(r.text(), "hello");
    assert_not_reused(&proxy, &up, "/garbage");

    let r = fetch_get(proxy.addr(), "/te-and-cl");
    assert_eq!(r.status, 200, "{r:?}");
    assert_not_reused(&proxy, &up, "/te-and-cl");

    for target in ["/conn-close", "/http10"] {
        let r = fetch_get(proxy.addr(), target);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert!(r.complete, "{target}: {r:?}");
        assert_eq!(r.text(), "hello", "{target}");
        assert_not_reused(&proxy, &up, target);
    }

    let r = fetch(proxy.addr(), "HEAD", "/head-body", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.raw_body.is_empty(), "a HEAD answer carried a body: {r:?}");
    assert_not_reused(&proxy, &up, "/head-body");

    // The surplus answer never reached anyone.
    for i in 0..3 {
        assert_good(&proxy, &format!("/last/{i}"));
    }
}

#[test]
fn transfer_encoding_and_content_length_deliver_the_whole_chunked_body() {
    // Both upstream paths: the direct one and hyper's pooled client.
    for direct in [true, false] {
        let up = Scripted::start(not_reusable);
        let proxy = proxy_for(&up, |c| c["upstream"]["direct"] = json!(direct));
        let r = fetch_get(proxy.addr(), "/te-and-cl");
        assert_eq!(r.status, 200, "direct {direct}: {r:?}");
        assert_ne!(
            r.header("content-length"),
            Some("3"),
            "direct {direct}: the upstream's overridden Content-Length was passed on: {r:?}"
        );
        assert!(r.complete, "direct {direct}: {r:?}");
        assert_eq!(r.text(), "hello", "direct {direct}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// more pool behaviour: client aborts, idle expiry, the idle limit, large bodies

/// `/big` answers with a Content-Length of 50 MB and sends 256 KiB, then waits for the proxy to
/// close the connection; the rest is answered normally.
fn big_then_wait(s: &mut TcpStream, hit: &Hit) -> Next {
    if hit.target.starts_with("/big") {
        send(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
              Content-Length: 50000000\r\n\r\n",
        );
        send(s, &pattern(0, 256 << 10));
        // Nothing more is sent; read_head in serve_conn notes the close (or times out).
        return Next::Keep;
    }
    ok_echo_target(s, hit);
    Next::Keep
}

#[test]
fn a_client_leaving_mid_body_closes_that_upstream_connection() {
    let up = Scripted::start(big_then_wait);
    let proxy = proxy_for(&up, |_| {});
    {
        let mut raw = Raw::connect(proxy.addr()).unwrap();
        raw.send(b"GET /big HTTP/1.1\r\nHost: lms.test\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 4096];
        let n = raw.stream.read(&mut first).unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        // Dropped here, 50 MB short.
    }
    let big = up.hit("/big");
    wait_for(
        "the proxy to close the upstream connection of the abandoned body",
        Duration::from_secs(5),
        || up.closed_by_proxy(big.conn),
    );
    assert_good(&proxy, "/after-big");
    assert_ne!(up.hit("/after-big").conn, big.conn);
}

#[test]
fn an_idle_connection_past_the_pool_idle_timeout_is_not_reused() {
    let up = Scripted::start(|s, hit| {
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |c| {
        c["upstream"]["pool_idle_timeout"] = json!("200ms");
    });
    assert_good(&proxy, "/first");
    // Sleeping longer than the timeout only makes "expired" more certain: no race here.
    std::thread::sleep(Duration::from_millis(500));
    assert_good(&proxy, "/second");
    let (first, second) = (up.hit("/first"), up.hit("/second"));
    assert_ne!(first.conn, second.conn, "an expired connection was reused");
    wait_for(
        "the proxy to close the expired connection",
        Duration::from_secs(5),
        || up.closed_by_proxy(first.conn),
    );
    // Within the timeout the connection is reused: a timeout no loaded machine can outlast
    // between two requests, so this holds without a timing window.
    let patient = proxy_for(&up, |c| {
        c["upstream"]["pool_idle_timeout"] = json!("60s");
    });
    assert_good(&patient, "/third");
    assert_good(&patient, "/fourth");
    assert_eq!(up.hit("/fourth").conn, up.hit("/third").conn);
}

#[test]
fn connections_beyond_the_idle_limit_are_closed() {
    let up = Scripted::start(|s, hit| {
        if hit.target.starts_with("/hold/") {
            std::thread::sleep(Duration::from_millis(300));
        }
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |c| {
        c["upstream"]["pool_max_idle_per_host"] = json!(1);
    });
    let addr = proxy.addr();
    let threads: Vec<_> = (0..4)
        .map(|i| std::thread::spawn(move || fetch_get(addr, &format!("/hold/{i}"))))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().status, 200);
    }
    let held: HashSet<u64> = up.hits_for("/hold/").iter().map(|h| h.conn).collect();
    assert_eq!(held.len(), 4, "four requests at once, four connections");
    wait_for(
        "all but one of the four connections to be closed",
        Duration::from_secs(5),
        || held.iter().filter(|c| up.closed_by_proxy(**c)).count() >= 3,
    );
    let kept: Vec<u64> = held
        .iter()
        .copied()
        .filter(|c| !up.closed_by_proxy(*c))
        .collect();
    for i in 0..5 {
        assert_good(&proxy, &format!("/seq/{i}"));
    }
    let seq: HashSet<u64> = up.hits_for("/seq/").iter().map(|h| h.conn).collect();
    assert_eq!(seq.len(), 1, "{seq:?}");
    if let [kept] = kept[..] {
        assert!(seq.contains(&kept), "the pooled connection was used");
    }
}

#[test]
fn large_sized_and_chunked_bodies_stream_intact() {
    const LEN: usize = 4 << 20;
    let up = Scripted::start(|s, hit| {
        match hit.target.as_str() {
            "/sized" => {
                send(
                    s,
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
                );
                for off in (0..LEN).step_by(100_000) {
                    send(s, &pattern(off as u64, (LEN - off).min(100_000)));
                }
            }
            "/chunked" => {
                send(s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                // Uneven chunk sizes, each written with its framing.
                let mut off = 0;
                let mut size = 1;
                while off < LEN {
                    let n = size.min(LEN - off);
                    let mut piece = format!("{n:x}\r\n").into_bytes();
                    piece.extend_from_slice(&pattern(off as u64, n));
                    piece.extend_from_slice(b"\r\n");
                    send(s, &piece);
                    off += n;
                    size = (size * 3 + 7) % 300_000 + 1;
                }
                send(s, b"0\r\n\r\n");
            }
            _ => ok_echo_target(s, hit),
        }
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});
    let want = sha256_hex(&pattern(0, LEN));
    for target in ["/sized", "/chunked", "/sized", "/chunked"] {
        let r = fetch_get(proxy.addr(), target);
        assert_eq!(r.status, 200, "{target}");
        assert!(r.complete, "{target}: {} bytes", r.body.len());
        assert_eq!(r.body.len(), LEN, "{target}");
        assert_eq!(sha256_hex(&r.body), want, "{target}");
    }
    let conns: HashSet<u64> = up
        .hits()
        .iter()
        .filter(|h| h.target != PROBE_PATH)
        .map(|h| h.conn)
        .collect();
    assert_eq!(
        conns.len(),
        1,
        "bodies read to their end leave the connection reusable"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. the direct path switched off

#[test]
fn with_direct_off_requests_still_work_through_the_pooled_client() {
    let up = Scripted::start(|s, hit| {
        match hit.target.as_str() {
            "/head" => send(s, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
            "/chunked" => send(
                s,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            _ => ok_echo_target(s, hit),
        }
        Next::Keep
    });
    let proxy = proxy_for(&up, |c| {
        c["upstream"]["direct"] = json!(false);
    });
    for i in 0..10 {
        assert_good(&proxy, &format!("/off/{i}"));
    }
    let r = fetch(proxy.addr(), "HEAD", "/head", "");
    assert_eq!(r.status, 200);
    assert!(r.raw_body.is_empty());
    let r = fetch_get(proxy.addr(), "/chunked");
    assert_eq!(r.status, 200);
    assert!(r.complete, "{r:?}");
    assert_eq!(r.text(), "hello");
    let r = fetch(proxy.addr(), "POST", "/off-post", "Content-Length: 0\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/off-post");
    let conns: HashSet<u64> = up.hits_for("/off/").iter().map(|h| h.conn).collect();
    assert!(conns.len() <= 2, "hyper's client pools too: {conns:?}");
}

// ---------------------------------------------------------------------------------------------
// 11. the request head sent upstream

#[test]
fn the_request_head_sent_upstream_is_http11_with_host_and_forwarding_headers() {
    let up = Scripted::start(|s, hit| {
        ok_echo_target(s, hit);
        Next::Keep
    });
    let proxy = proxy_for(&up, |_| {});

    let r = fetch(
        proxy.addr(),
        "GET",
        "/course/view.php?id=7&x=%20y",
        "X-Custom: one\r\nAccept: text/html\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = fetch(proxy.addr(), "GET", "/get-cl0", "Content-Length: 0\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = fetch(proxy.addr(), "POST", "/post-cl0", "Content-Length: 0\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = fetch(proxy.addr(), "POST", "/post-none", "");
    assert_eq!(r.status, 200, "{r:?}");
    let r = fetch(proxy.addr(), "DELETE", "/delete", "");
    assert_eq!(r.status, 200, "{r:?}");

    let get = up.hit("/course/view.php?id=7&x=%20y");
    assert_eq!(get.line, "GET /course/view.php?id=7&x=%20y HTTP/1.1");
    assert_eq!(get.all("host"), ["lms.test"], "{get:?}");
    let xff = get.header("x-forwarded-for").unwrap_or_else(|| {
        panic!("no X-Forwarded-For: {get:?}");
    });
    assert!(xff.contains("127.0.0.1"), "{xff}");
    assert_eq!(get.header("x-custom"), Some("one"));
    assert_eq!(get.header("accept"), Some("text/html"));
    for name in ["content-length", "transfer-encoding"] {
        assert!(get.header(name).is_none(), "a GET carried {name}: {get:?}");
    }
    assert!(
        get.all("connection")
            .iter()
            .all(|v| !v.eq_ignore_ascii_case("close")),
        "the client's Connection: close was passed on: {get:?}"
    );

    let get0 = up.hit("/get-cl0");
    assert_eq!(get0.line, "GET /get-cl0 HTTP/1.1");
    assert!(
        get0.header("transfer-encoding").is_none()
            && get0
                .header("content-length")
                .is_none_or(|v| v.trim() == "0"),
        "{get0:?}"
    );

    for target in ["/post-cl0", "/post-none"] {
        let post = up.hit(target);
        assert_eq!(post.line, format!("POST {target} HTTP/1.1"));
        assert_eq!(post.all("host"), ["lms.test"], "{post:?}");
        assert!(post.header("x-forwarded-for").is_some(), "{post:?}");
        assert_eq!(post.all("content-length"), ["0"], "{post:?}");
        assert!(post.header("transfer-encoding").is_none(), "{post:?}");
    }
    let delete = up.hit("/delete");
    assert_eq!(delete.line, "DELETE /delete HTTP/1.1");
    assert!(delete.header("transfer-encoding").is_none(), "{delete:?}");

    // All of them rode the pool: the whole exchange is one or two connections.
    let conns: HashSet<u64> = up
        .hits()
        .iter()
        .filter(|h| h.target != PROBE_PATH)
        .map(|h| h.conn)
        .collect();
    assert!(conns.len() <= 2, "{conns:?}");
}
