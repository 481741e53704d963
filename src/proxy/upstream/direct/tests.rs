//! Unit tests of the direct path: framing, chunked decoding, the pool.
use super::body::*;
use super::chunked::*;
use super::encode::*;
use super::head::*;
use super::names::*;
use super::*;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::proxy::headers;

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
    let (parts, len, keep_alive) = parse_response_head(&bytes, false, &mut NameCache::default())
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
    use rand::{Rng, SeedableRng};
    let seed: &[u8] =
        b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
    let specials = b"\r\n;0123456789abcdefxX \t";
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x63_68_75_6e_6b);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = Arc::new(super::idle::IdleConns::new(4, Duration::from_secs(30)));
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
