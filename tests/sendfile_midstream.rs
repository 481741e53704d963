//! A file that changes while it is being sent. The Content-Length is already on the wire, so the
//! only honest answer to a file that shrinks or is rewritten in place is to cut the response
//! short (the client sees a short body and a closed connection and knows the download failed),
//! log it, and carry on serving. A file that is deleted (or renamed over) mid-download is not an
//! error: the open handle still reads the complete old version, as with nginx.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sendfile_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sendfile_common::{request, wait_for, Proxy, Standin};

/// Large enough that the kernel's socket buffers hold only a small part of it.
const LEN: u64 = 256 << 20;

/// A download that reads `first` body bytes, lets `change` run, then reads to the end.
/// Returns (Content-Length, body bytes received).
fn download_around(port: u16, name: &str, first: usize, change: impl FnOnce()) -> (u64, u64) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Small, so the proxy cannot push far ahead of what we read.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /pluginfile.php/{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the headers");
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    let content_length: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut received = (head.len() - body_start) as u64;
    while received < first as u64 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "ended before the change");
        received += n as u64;
    }
    change();
    // To EOF; a reset counts as the end too.
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    (content_length, received)
}

fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

struct Setup {
    _base: tempfile::TempDir,
    root: std::path::PathBuf,
    _standin: Standin,
    proxy: Proxy,
}

fn setup() -> Setup {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("moodledata");
    std::fs::create_dir_all(&root).unwrap();
    let standin = Standin::start();
    let proxy = Proxy::start(standin.addr, &root, "");
    Setup {
        _base: base,
        root,
        _standin: standin,
        proxy,
    }
}

const CUT_SHORT: &str = "offloaded file failed mid-stream";

#[test]
fn truncated_mid_download_cuts_the_response_short() {
    let s = setup();
    let file = s.root.join("shrinks.bin");
    sparse(&file, LEN);
    let (declared, received) = download_around(s.proxy.port, "shrinks.bin", 1 << 20, || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
    });
    assert_eq!(declared, LEN);
    assert!(
        received < LEN,
        "the whole declared length arrived from a file that shrank"
    );
    wait_for("the proxy to log the cut", Duration::from_secs(10), || {
        s.proxy.output().contains(CUT_SHORT)
    });
    let log = s.proxy.output();
    let line = log.lines().find(|l| l.contains(CUT_SHORT)).unwrap();
    assert!(line.contains("shrank"), "{line}");
    assert!(line.contains("shrinks.bin"), "{line}");

    // The next request works, and sees the file as it is now.
    let r = request(s.proxy.port, "GET", "/pluginfile.php/shrinks.bin", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1048576"));
    assert_eq!(r.body.len(), 1 << 20);
}

#[test]
fn rewritten_in_place_mid_download_cuts_the_response_short() {
    let s = setup();
    let file = s.root.join("changes.bin");
    sparse(&file, LEN);
    let (declared, received) = download_around(s.proxy.port, "changes.bin", 1 << 20, || {
        // Same length, new content and mtime: the bytes still to come belong to another file.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(b"new content", LEN - 11).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
    });
    assert_eq!(declared, LEN);
    assert!(
        received < LEN,
        "a file rewritten mid-download was sent whole"
    );
    wait_for("the proxy to log the cut", Duration::from_secs(10), || {
        s.proxy.output().contains(CUT_SHORT)
    });
    let log = s.proxy.output();
    let line = log.lines().find(|l| l.contains(CUT_SHORT)).unwrap();
    assert!(line.contains("modified"), "{line}");

    let r = request(
        s.proxy.port,
        "GET",
        "/pluginfile.php/changes.bin",
        &[("Range", "bytes=-11")],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"new content");
}

#[test]
fn deleted_mid_download_still_completes() {
    let s = setup();
    let file = s.root.join("vanishes.bin");
    // Smaller: this one is read to the end.
    let len: u64 = 32 << 20;
    sparse(&file, len);
    let (declared, received) = download_around(s.proxy.port, "vanishes.bin", 1 << 20, || {
        std::fs::remove_file(&file).unwrap();
    });
    assert_eq!(declared, len);
    assert_eq!(received, len, "the open handle still reads the whole file");
    assert!(!s.proxy.output().contains(CUT_SHORT));

    // Gone now: the next request for it is a 404, and other files still work.
    let r = request(s.proxy.port, "GET", "/pluginfile.php/vanishes.bin", &[]).unwrap();
    assert_eq!(r.status, 404);
    sparse(&s.root.join("other.bin"), 1000);
    let r = request(s.proxy.port, "GET", "/pluginfile.php/other.bin", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
}

#[test]
fn x_accel_limit_rate_paces_the_download_end_to_end() {
    // 120 kB at 60 kB/s, paced from the start in quarter-second chunks: the last one is due
    // 1.75 s in. Only a lower bound is asserted: a loaded machine can only make it later.
    let s = setup();
    let len = 120_000;
    std::fs::write(s.root.join("paced.bin"), vec![7u8; len]).unwrap();
    let started = std::time::Instant::now();
    let r = request(
        s.proxy.port,
        "GET",
        "/pluginfile.php/paced.bin?limit=60000",
        &[],
    )
    .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);
    assert!(
        r.header("x-accel-limit-rate").is_none(),
        "the control leaked"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "120 kB at 60 kB/s arrived in {took:?}"
    );
}
