//! The two clients side by side: the same upstream bytes, sent once through the direct path and
//! once through hyper's pooled client, must give the client the same answer (status, headers
//! after the hop-by-hop rules, body) or fail the same way (the same error class).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::observe::metrics::CoreMetrics;
use crate::proxy::config::UpstreamConfig;

/// What the client would see, reduced to what must agree.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Answer {
        status: u16,
        /// Sorted name: value lines, minus Date (hyper may add none, but the upstream's own is
        /// kept) and minus what each path adds for itself.
        headers: Vec<String>,
        body: Result<Bytes, &'static str>,
    },
    /// The exchange failed before a head: the error's class.
    Failed(&'static str),
}

/// A stand-in upstream that answers every connection's first request with `reply`, then
/// closes (so both clients see the same stream of bytes whatever their pooling).
async fn canned_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Read the request head before answering, as a server would.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock.write_all(reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

fn upstream(addr: std::net::SocketAddr, direct: bool) -> Upstream {
    let yaml = format!("url: \"http://{addr}\"\ndirect: {direct}\nresponse_timeout: 5s\n");
    let cfg: UpstreamConfig = serde_saphyr::from_str(&yaml).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(CoreMetrics::register(&registry).unwrap());
    Upstream::build(&cfg, metrics).unwrap()
}

async fn through(upstream: &Upstream, method: &str) -> Seen {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "lms.example")
        .body(())
        .unwrap()
        .into_parts();
    let forward = crate::proxy::headers::ForwardHeaders::default();
    let changes = crate::context::UpstreamHeaders::default();
    let timer = crate::timer::response_timer::ResponseTimer::default();
    let exchange = upstream
        .send(
            &timer,
            UpstreamRequest {
                parts: &mut parts,
                body: &mut RequestBody::empty(),
                forward: &forward,
                changes: &changes,
                on_upgrade: None,
                keep_headers: &[],
                started: Instant::now(),
            },
        )
        .await;
    let response = match exchange.result {
        Ok(r) => r,
        Err(e) => {
            return Seen::Failed(match e {
                ForwardError::Connect(_) => "connect",
                ForwardError::Timeout(_) => "timeout",
                ForwardError::Protocol(_) => "protocol",
                ForwardError::UnexpectedSwitch => "switch",
                _ => "other",
            })
        }
    };
    let status = response.status().as_u16();
    assert_eq!(response.version(), http::Version::HTTP_11);
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    headers.sort();
    let body =
        match tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(_)) => Err("body error"),
            Err(_) => Err("body timeout"),
        };
    Seen::Answer {
        status,
        headers,
        body,
    }
}

/// Valid, unusual and malformed answers. Both clients must agree on each.
const CASES: &[(&str, &str, &[u8])] = &[
    (
        "content-length",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
    ),
    (
        "chunked",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ),
    (
        "chunked with an extension",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunked with trailers",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
    ),
    (
        "close-delimited",
        "GET",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
    ),
    (
        "http/1.0 answer",
        "GET",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "transfer-encoding beside content-length",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ),
    (
        "hop-by-hop headers and one Connection names",
        "GET",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "a HEAD answer announces a length",
        "HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
    ),
    (
        "204 has no body",
        "GET",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ),
    (
        "an interim 100 before the answer",
        "GET",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "repeated equal content-lengths",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "conflicting content-lengths",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    ),
    (
        "a bad chunk size",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "a body cut short",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ),
    ("a garbage status line", "GET", b"HTTP/1.1 abc OK\r\n\r\n"),
    ("no answer at all", "GET", b""),
    (
        "a transfer coding other than chunked",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    ),
    (
        "gzip under chunked",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
    ),
    (
        "an obs-folded header",
        "GET",
        b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "a header name with a space",
        "GET",
        b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "a status above 599",
        "GET",
        b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
    ),
];

#[tokio::test]
async fn both_clients_give_the_same_answer_or_the_same_failure() {
    let mut disagreements = Vec::new();
    for (name, method, reply) in CASES {
        let addr = canned_upstream(reply).await;
        let direct = through(&upstream(addr, true), method).await;
        let pooled = through(&upstream(addr, false), method).await;
        if direct != pooled {
            disagreements.push(format!("{name}:\n  direct {direct:?}\n  pooled {pooled:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the clients disagree:\n{}",
        disagreements.join("\n")
    );
}
