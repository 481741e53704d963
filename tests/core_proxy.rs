//! Core proxy behaviour over real sockets: forwarding headers, request smuggling and malformed
//! input, limits, upstream failures and upgrades. Each test runs its own moodle-edge binary in
//! front of its own stand-in upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

fn keepalive_get(addr: std::net::SocketAddr, path: &str, extra: &str) -> RawResponse {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: lms.test\r\n{extra}\r\n").as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// forwarding

#[test]
fn host_is_preserved_and_forwarded_headers_are_set() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let resp = roundtrip(
        proxy.addr(),
        b"GET /course/view.php?id=2 HTTP/1.1\r\nHost: lms.example.edu:8080\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
          Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.json();
    assert_eq!(echo["uri"], "/course/view.php?id=2");
    assert_eq!(
        echo_header(&echo, "host").as_deref(),
        Some("lms.example.edu:8080")
    );
    // The peer is not a trusted proxy: what it claims is replaced, not appended to.
    assert_eq!(
        echo_header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-host").as_deref(),
        Some("lms.example.edu:8080")
    );
    assert_eq!(
        echo_header(&echo, "x-real-ip").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echo_header(&echo, "forwarded"), None);
    let xff = echo_headers(&echo)
        .into_iter()
        .filter(|(k, _)| k == "x-forwarded-for")
        .count();
    assert_eq!(xff, 1);
}

#[test]
fn forwarded_for_is_believed_from_a_trusted_proxy() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["trusted_proxies"] = json!(["127.0.0.1/32"]);
    });
    let resp = get(
        proxy.addr(),
        "/trusted",
        "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n",
    );
    let echo = resp.json();
    assert_eq!(
        echo_header(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        echo_header(&echo, "x-real-ip").as_deref(),
        Some("203.0.113.9")
    );
    let line = proxy.access_line_for("/trusted");
    assert_eq!(line["client_ip"], "203.0.113.9");
}

#[test]
fn request_id_is_propagated_when_sane_and_created_otherwise() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});

    let resp = get(proxy.addr(), "/rid", "X-Request-Id: abc-123.def_456\r\n");
    assert_eq!(resp.header("x-request-id"), Some("abc-123.def_456"));
    assert_eq!(
        echo_header(&resp.json(), "x-request-id").as_deref(),
        Some("abc-123.def_456")
    );

    for bad in ["has spaces in it", "<script>", &"x".repeat(300)] {
        let resp = get(proxy.addr(), "/rid", &format!("X-Request-Id: {bad}\r\n"));
        let returned = resp
            .header("x-request-id")
            .expect("a request id")
            .to_string();
        assert_ne!(returned, bad);
        assert!(
            returned.len() >= 16 && returned.bytes().all(|b| b.is_ascii_hexdigit()),
            "{returned}"
        );
        assert_eq!(echo_header(&resp.json(), "x-request-id"), Some(returned));
    }

    let resp = get(proxy.addr(), "/rid", "");
    let created = resp
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    assert_eq!(
        echo_header(&resp.json(), "x-request-id"),
        Some(created.clone())
    );
    let again = get(proxy.addr(), "/rid", "");
    assert_ne!(again.header("x-request-id"), Some(created.as_str()));
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let resp = roundtrip(
        proxy.addr(),
        b"GET /hop HTTP/1.1\r\nHost: lms.test\r\nConnection: keep-alive, X-Hop-Secret\r\n\
          X-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\r\n",
    );
    let echo = resp.json();
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(
            echo_header(&echo, gone),
            None,
            "{gone} reached the upstream"
        );
    }
    assert_eq!(echo_header(&echo, "x-kept").as_deref(), Some("yes"));
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let up = Upstream::start();
    up.route(
        "/hop",
        Reply::echo()
            .header("Connection", "X-Resp-Hop")
            .header("X-Resp-Hop", "1")
            .header("Keep-Alive", "timeout=5, max=100")
            .header("Proxy-Authenticate", "Basic realm=x")
            .header("Proxy-Connection", "keep-alive")
            .header("Trailer", "X-T")
            .header("Upgrade", "h2c")
            .header("X-Kept", "yes"),
    );
    let proxy = Proxy::start(&up.url(), |_, _| {});
    // Keep-alive request: hyper adds no Connection header of its own to the answer.
    let resp = keepalive_get(proxy.addr(), "/hop", "");
    assert_eq!(resp.status, 200);
    for gone in [
        "connection",
        "x-resp-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            resp.header(gone),
            None,
            "{gone} reached the client: {:?}",
            resp.headers
        );
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

#[test]
fn offload_and_identity_headers_from_clients_never_reach_upstream() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let resp = get(
        proxy.addr(),
        "/reserved",
        "X-Accel-Redirect: /moodledata-internal/secret\r\nX-Accel-Buffering: no\r\n\
         X-Sendfile: /etc/passwd\r\nX-Sendfile-Type: X-Sendfile\r\nX-Lighttpd-Send-File: /etc/shadow\r\n\
         X-Moodle-Edge-User: admin\r\nX-MOODLE-EDGE-TENANT: t1\r\n",
    );
    let echo = resp.json();
    for (name, _) in echo_headers(&echo) {
        assert!(
            !name.starts_with("x-accel-")
                && !name.starts_with("x-sendfile")
                && !name.starts_with("x-moodle-edge-")
                && name != "x-lighttpd-send-file",
            "{name} reached the upstream"
        );
    }
}

#[test]
fn upstream_connections_are_pooled() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    proxy.wait_ready();
    let before = up.connections();
    // 50 requests, each on a new client connection.
    for i in 0..50 {
        let resp = get(proxy.addr(), &format!("/pooled/{i}"), "");
        assert_eq!(resp.status, 200);
    }
    let opened = up.connections() - before;
    assert!(
        opened <= 3,
        "50 requests opened {opened} upstream connections"
    );
    assert_eq!(up.seen_path("/pooled/").len(), 50);
}

// ---------------------------------------------------------------------------------------------
// request smuggling and malformed input: refused, and nothing reaches the upstream

/// Sends `bytes` on a fresh proxy, expects `status`, then that the connection closes, that the
/// upstream saw nothing, and that the proxy still serves.
fn refused(bytes: &[u8], status: u16) {
    let up = Upstream::start();
    let mut proxy = Proxy::start(&up.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    let _ = raw.send(bytes);
    let resp = raw
        .read_response()
        .unwrap_or_else(|e| panic!("no answer ({e})\n{}", proxy.output()));
    assert_eq!(resp.status, status, "{}", resp.text());
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "the connection stayed open"
    );
    // A request that reached the upstream would be recorded by now: the answer came after it.
    assert!(up.seen().is_empty(), "the upstream saw {:?}", up.seen());
    assert!(proxy.is_running());
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}

#[test]
fn content_length_with_transfer_encoding_is_refused_with_400_and_closed() {
    // CL+TE (RFC 9112 §6.3 lets TE win; nginx and Envoy refuse it): hyper drops the
    // Content-Length before the pipeline sees it, so the listener's head scan must catch it.
    // A clean request goes first on the same connection, so the verdict must name the right
    // request; a body that merely contains both names must not be taken for a head.
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\n",
    ] {
        let mut raw = Raw::connect(proxy.addr()).unwrap();
        let decoy = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        raw.send(
            format!(
                "POST /first HTTP/1.1\r\nHost: lms.test\r\nContent-Length: {}\r\n\r\n{decoy}",
                decoy.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let first = raw.read_response().unwrap();
        assert_eq!(first.status, 200, "{}", first.text());
        let req = format!(
            "POST /smuggle HTTP/1.1\r\nHost: lms.test\r\n{order}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: lms.test\r\n\r\n"
        );
        raw.send(req.as_bytes()).unwrap();
        let resp = raw
            .read_response()
            .unwrap_or_else(|e| panic!("no answer ({e}) for {order:?}\n{}", proxy.output()));
        assert_eq!(resp.status, 400, "{order:?}: {}", resp.text());
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(
            raw.closed_within(Duration::from_secs(5)),
            "connection stayed open ({order:?})"
        );
    }
    assert_eq!(up.seen_path("/first").len(), 2);
    assert!(
        up.seen_path("/smuggle").is_empty(),
        "a CL+TE request was forwarded"
    );
    assert!(
        up.seen_path("/smuggled").is_empty(),
        "a smuggled request reached the upstream"
    );
    assert_eq!(
        proxy.metric(r#"moodle_edge_rejected_requests_total{reason="smuggling"}"#),
        Some(2.0)
    );
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    // `printf 'POST ...' | nc -N`: the client shuts its sending side down and waits. nginx
    // answers it; hyper closes on the read EOF unless half-close is on.
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    for (what, req) in [
        (
            "a body (pooled path)",
            &b"POST /half/body HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 5\r\n\r\nhello"[..],
        ),
        (
            "no body (direct path)",
            b"GET /half/get HTTP/1.1\r\nHost: lms.test\r\n\r\n",
        ),
    ] {
        let mut raw = Raw::connect(proxy.addr()).unwrap();
        raw.send(req).unwrap();
        raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let resp = raw
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: no answer ({e})\n{}", proxy.output()));
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert!(
            raw.closed_within(Duration::from_secs(5)),
            "{what}: the connection stayed open after the answer to a half-closed client"
        );
    }
    let seen = up.seen_path("/half/body");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref().map(|b| b.0), Some(5));
}

/// An HTTP/1.0 upstream (as `python3 -m http.server` is): answers 1.0, then closes; `/eof`
/// answers with a body that ends at the close.
fn http10_upstream(mut s: TcpStream) {
    use std::io::Read;
    let head = String::from_utf8_lossy(&read_head(&mut s)).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = s.read_exact(&mut body);
    let answer: &[u8] = if head.contains(" /eof ") {
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close"
    } else {
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    };
    let _ = s.write_all(answer);
}

#[test]
fn behind_an_http10_upstream_clients_get_http11_and_keep_their_connection() {
    let up = RawUpstream::start(http10_upstream);
    for direct in [true, false] {
        let proxy = Proxy::start(&up.url(), |c, _| c["upstream"]["direct"] = json!(direct));
        let mut raw = Raw::connect(proxy.addr()).unwrap();
        for (req, body) in [
            (&b"GET /a HTTP/1.1\r\nHost: lms.test\r\n\r\n"[..], "ok"),
            (
                b"GET /eof HTTP/1.1\r\nHost: lms.test\r\n\r\n",
                "until-close",
            ),
            (
                b"POST /p HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 3\r\n\r\nabc",
                "ok",
            ),
            (b"GET /a HTTP/1.1\r\nHost: lms.test\r\n\r\n", "ok"),
        ] {
            let what = format!(
                "direct={direct} {}",
                String::from_utf8_lossy(req).lines().next().unwrap()
            );
            raw.send(req).unwrap();
            let resp = raw
                .read_response()
                .unwrap_or_else(|e| panic!("{what}: no answer on the kept connection ({e})"));
            assert_eq!(resp.status, 200, "{what}");
            assert_eq!(resp.version, "HTTP/1.1", "{what}");
            assert_eq!(resp.text(), body, "{what}");
            assert!(
                !resp
                    .all("connection")
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case("close")),
                "{what}: {:?}",
                resp.headers
            );
        }
    }
}

#[test]
fn two_different_content_lengths_are_refused() {
    refused(
        b"POST /cl HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
}

#[test]
fn a_content_length_that_is_not_a_number_is_refused() {
    refused(
        b"POST /cl HTTP/1.1\r\nHost: lms.test\r\nContent-Length: +5\r\n\r\nhello",
        400,
    );
}

#[test]
fn chunked_not_last_is_refused() {
    refused(
        b"POST /te HTTP/1.1\r\nHost: lms.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn unknown_transfer_coding_is_refused() {
    refused(
        b"POST /te HTTP/1.1\r\nHost: lms.test\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        400,
    );
}

#[test]
fn obs_fold_is_refused() {
    refused(
        b"GET /fold HTTP/1.1\r\nHost: lms.test\r\nX-Folded: a\r\n b\r\n\r\n",
        400,
    );
}

#[test]
fn http10_with_transfer_encoding_is_refused() {
    refused(
        b"POST /old HTTP/1.0\r\nHost: lms.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn a_garbage_request_line_is_refused() {
    refused(b"THIS IS NOT HTTP\r\n\r\n", 400);
}

#[test]
fn a_space_before_the_colon_is_refused() {
    refused(
        b"GET /sp HTTP/1.1\r\nHost: lms.test\r\nX-Bad : 1\r\n\r\n",
        400,
    );
}

#[test]
fn a_missing_or_doubled_host_is_refused() {
    refused(b"GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n", 400);
    refused(
        b"GET /twohosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        400,
    );
}

#[test]
fn a_bad_chunk_size_never_completes_an_upstream_request() {
    // The head may already be on its way upstream (bodies stream), but the body must not
    // complete there, and the client gets an error or a closed connection, never a 2xx.
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"POST /badchunk HTTP/1.1\r\nHost: lms.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    // The README's promise: 400 and the connection closed.
    let resp = raw.read_response().expect("an answer to a bad chunk size");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(raw.closed_within(Duration::from_secs(5)));
    assert!(
        up.seen().iter().all(|s| s.body.is_none()),
        "the upstream got a complete request: {:?}",
        up.seen()
    );
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}

#[test]
fn trace_and_connect_are_refused() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let resp = roundtrip(
        proxy.addr(),
        b"TRACE / HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 405);
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .unwrap();
    let resp = raw.read_response().expect("an answer to CONNECT");
    assert_eq!(resp.status, 405, "CONNECT: {}", resp.text());
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

// ---------------------------------------------------------------------------------------------
// limits

/// With `max_header_size` at `limit`, a request with a header of `ok` bytes passes and one of
/// `too_big` bytes gets 431 without reaching the upstream.
fn header_limit_holds(limit: &str, ok: usize, too_big: usize) {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["max_header_size"] = json!(limit);
    });
    let passed = get(
        proxy.addr(),
        "/hdr",
        &format!("X-Big: {}\r\n", "a".repeat(ok)),
    );
    assert_eq!(passed.status, 200, "{limit}: {ok} bytes");
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    let _ = raw.send(
        format!(
            "GET /hdr-big HTTP/1.1\r\nHost: lms.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(too_big)
        )
        .as_bytes(),
    );
    assert_eq!(
        raw.read_response().unwrap().status,
        431,
        "{limit}: {too_big} bytes"
    );
    assert!(up.seen_path("/hdr-big").is_empty());
}

#[test]
fn a_header_over_max_header_size_gets_431() {
    // hyper's own limit: its read buffer is sized to max_header_size.
    header_limit_holds("8KiB", 6 * 1024, 12 * 1024);
}

#[test]
fn a_limit_under_hyper_s_smallest_buffer_is_enforced_by_measuring_the_head() {
    // hyper's read buffer cannot go below 8 KiB: a 4 KiB limit is the proxy's own check.
    header_limit_holds("4KiB", 3 * 1024, 6 * 1024);
}

#[test]
fn a_header_over_the_default_limit_gets_431() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    let _ = raw.send(
        format!(
            "GET /hdr-big HTTP/1.1\r\nHost: lms.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(80 * 1024)
        )
        .as_bytes(),
    );
    assert_eq!(raw.read_response().unwrap().status, 431);
    assert!(up.seen().is_empty());
}

#[test]
fn a_declared_body_over_max_body_size_gets_413_without_reaching_upstream() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["max_body_size"] = json!("1MiB");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"POST /upload HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 2097152\r\n\r\n")
        .unwrap();
    let resp = raw.read_response().unwrap();
    assert_eq!(resp.status, 413);
    assert!(raw.closed_within(Duration::from_secs(5)));
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    // JSON on a web-service path.
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"POST /webservice/rest/server.php HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 2097152\r\n\r\n")
        .unwrap();
    let resp = raw.read_response().unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["errorcode"], "requesttoolarge");
    assert!(up.seen().is_empty());
}

#[test]
fn a_chunked_body_over_max_body_size_never_completes_upstream() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["max_body_size"] = json!("1MiB");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(
            b"POST /chunked-big HTTP/1.1\r\nHost: lms.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        )?;
        for i in 0..32u64 {
            let chunk = pattern(i * 65536, 65536);
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            writer.write_all(&chunk)?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")
    });
    let resp = raw
        .read_response()
        .expect("an answer to a chunked body over the limit");
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(raw.closed_within(Duration::from_secs(5)));
    let _ = sender.join();
    assert!(
        up.seen_path("/chunked-big")
            .iter()
            .all(|s| s.body.is_none()),
        "the upstream got the whole over-limit body"
    );
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}

#[test]
fn slow_headers_are_dropped_after_header_read_timeout() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["header_read_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"GET /slow HTTP/1.1\r\nHost: lms.test\r\nX-Trickle: 1\r\n")
        .unwrap();
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "a slowloris connection stayed open"
    );
    assert!(up.seen().is_empty());
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
    // A head left half-sent is counted as such.
    common::wait_for("the header_timeout count", Duration::from_secs(5), || {
        proxy
            .metric("moodle_edge_connection_errors_total{reason=\"header_timeout\"}")
            .unwrap_or(0.0)
            >= 1.0
    });
}

#[test]
fn the_header_read_timeout_closes_idle_keep_alive_but_not_busy_connections() {
    let up = Upstream::start();
    up.route("/slow-answer", Reply::echo().delay_ms(2500));
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["header_read_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    // An upstream slower than the header-read timeout: the request is in flight, so the
    // connection is not cut, and the next request on it works.
    raw.send(b"GET /slow-answer HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert_eq!(raw.read_response().unwrap().status, 200);
    raw.send(b"GET /next HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert_eq!(raw.read_response().unwrap().status, 200);
    // Then idle: closed after about the timeout, like a keep-alive timeout.
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "an idle keep-alive connection stayed open"
    );
    // An idle keep-alive connection closing is not an error: nothing is counted for it.
    assert_eq!(
        proxy
            .metric("moodle_edge_connection_errors_total{reason=\"header_timeout\"}")
            .unwrap_or(0.0),
        0.0
    );
}

#[test]
fn a_body_that_stops_arriving_is_cut_after_client_body_timeout() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["client_body_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(
        b"POST /slow-body HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .unwrap();
    let resp = raw.read_response().expect("an answer to a stalled body");
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert!(raw.closed_within(Duration::from_secs(5)));
    assert!(up.seen_path("/slow-body").iter().all(|s| s.body.is_none()));
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}

#[test]
fn a_third_connection_waits_while_max_connections_are_open() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["max_connections"] = json!(2);
    });
    // Two keep-alive connections, each served once and then left open.
    let mut first = Raw::connect(proxy.addr()).unwrap();
    first
        .send(b"GET /c1 HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert_eq!(first.read_response().unwrap().status, 200);
    let mut second = Raw::connect(proxy.addr()).unwrap();
    second
        .send(b"GET /c2 HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert_eq!(second.read_response().unwrap().status, 200);

    let mut third = Raw::connect(proxy.addr()).unwrap();
    third
        .send(b"GET /c3 HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        third.silent_for(Duration::from_millis(800)),
        "the third connection was served"
    );
    assert!(up.seen_path("/c3").is_empty());

    drop(first);
    let resp = third.read_response().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(up.seen_path("/c3").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// upstream failures

#[test]
fn an_unreachable_upstream_gives_502_html_and_moodle_json() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&dead, |_, _| {});
    let resp = get(proxy.addr(), "/course/view.php?id=2", "");
    assert_eq!(resp.status, 502);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        resp.text().contains("<html") && resp.text().len() < 4096,
        "{}",
        resp.text()
    );

    let resp = get(
        proxy.addr(),
        "/webservice/rest/server.php?wsfunction=core_webservice_get_site_info",
        "",
    );
    assert_eq!(resp.status, 502);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = resp.json();
    assert!(
        v["exception"].is_string() && v["errorcode"].is_string() && v["message"].is_string(),
        "{v}"
    );
    assert!(
        proxy
            .metric("moodle_edge_upstream_errors_total{kind=\"connect\"}")
            .unwrap_or(0.0)
            >= 2.0
    );
}

#[test]
fn an_upstream_that_never_answers_gives_504() {
    let up = Upstream::start();
    up.route("/never", Reply::never());
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["upstream"]["response_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(b"GET /never HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = raw.read_response().expect("an answer within 5s");
    assert_eq!(resp.status, 504);
    let resp = get(proxy.addr(), "/webservice/rest/server.php", "");
    assert_eq!(resp.status, 200, "the proxy still works");
}

fn cut_mid_body(mut s: TcpStream) {
    let head = read_head(&mut s);
    if head.is_empty() {
        return;
    }
    let _ = s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: text/plain\r\n\r\n",
    );
    let _ = s.write_all(&[b'x'; 1000]);
    let _ = s.flush();
    // Dropping the stream closes it, 999000 bytes short.
}

#[test]
fn an_upstream_closing_mid_body_truncates_the_response_and_the_proxy_survives() {
    let raw_up = RawUpstream::start(cut_mid_body);
    let proxy = Proxy::start(&raw_up.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"GET /cut HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    match raw.read_response() {
        Ok(resp) => assert!(resp.body.len() < 1_000_000, "a cut body arrived whole"),
        Err(e) => eprintln!("truncated as expected: {e}"),
    }
    // Again with a fresh connection: the proxy is still up and answering.
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"GET /cut2 HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    if let Ok(resp) = raw.read_response() {
        assert!(resp.body.len() < 1_000_000, "a cut body arrived whole");
    }
    let mut proxy = proxy;
    assert!(proxy.is_running());
    let line = proxy.access_line_for("/cut");
    assert_eq!(line["complete"], false, "{line}");
}

#[test]
fn an_upstream_idle_mid_body_is_cut_after_idle_timeout() {
    let up = Upstream::start();
    up.route("/stall", Reply::stall(1 << 20, 100 * 1024));
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["upstream"]["idle_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    raw.send(b"GET /stall HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    // The head and the first 100 KiB arrive; then the proxy must cut the client connection
    // (a read timeout here would mean it waited for ever).
    match raw.read_response() {
        Ok(resp) => panic!("a stalled body completed: {} bytes", resp.body.len()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
}

// ---------------------------------------------------------------------------------------------
// upgrades

#[test]
fn websocket_upgrade_passes_through() {
    let up = Upstream::start();
    up.route("/ws", Reply::upgrade());
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(
        b"GET /ws HTTP/1.1\r\nHost: lms.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let resp = raw.read_response().unwrap();
    assert_eq!(resp.status, 101);
    assert!(resp
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    let seen = &up.seen_path("/ws")[0];
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(seen
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(
        seen.header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );

    for msg in [
        &b"hello"[..],
        &[0x81, 0x02, b'h', b'i'][..],
        &pattern(0, 100_000)[..],
    ] {
        raw.send(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut raw.stream, &mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn an_idle_websocket_outlives_the_header_read_timeout() {
    let up = Upstream::start();
    up.route("/ws", Reply::upgrade());
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["header_read_timeout"] = json!("1s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(
        b"GET /ws HTTP/1.1\r\nHost: lms.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    assert_eq!(raw.read_response().unwrap().status, 101);
    // Quiet for well past the header-read timeout: the upgraded connection is not a request
    // head in waiting and must stay up.
    std::thread::sleep(Duration::from_millis(2500));
    raw.send(b"still here").unwrap();
    let mut back = [0u8; 10];
    std::io::Read::read_exact(&mut raw.stream, &mut back).unwrap();
    assert_eq!(&back, b"still here");
}
