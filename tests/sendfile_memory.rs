//! 100 slow clients download a 1 GiB file at once: the proxy's memory stays flat (the file is
//! streamed in bounded chunks, never buffered), and the upstream is free the moment the headers
//! are out (the offload answer's connection went back to the pool; Moodle's PHP worker is not
//! held for the length of a download).
//!
//! The clients read like a phone on a slow network: a small socket receive buffer and about
//! 512 KB/s each. The downloads run for a bounded time and are then dropped; nobody needs the
//! whole GiB to see the steady state. No timing assertions: the bounds are on memory and counts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sendfile_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use sendfile_common::{rss_kib, Proxy, Standin};

const FILE_LEN: u64 = 1 << 30;
const CLIENTS: usize = 100;
/// Bytes per second per client.
const RATE: u64 = 512 * 1024;
/// How long the downloads run once all of them have their headers.
const RUN: Duration = Duration::from_secs(10);
/// Idle upstream connections the proxy may keep; more are closed when they come back.
const POOL: usize = 8;
/// The bound on the proxy's memory growth for this load.
const MAX_GROWTH_KIB: u64 = 32 * 1024;

struct Download {
    status: u16,
    content_length: Option<u64>,
    received: u64,
    /// The server closed before the deadline (it must not: the file is far from done).
    ended_early: bool,
}

/// One slow reader: small receive buffer, paced reads, stops at `deadline` (drops the socket).
async fn slow_download(
    port: u16,
    headers_seen: Arc<AtomicUsize>,
    deadline: Arc<tokio::sync::OnceCell<Instant>>,
) -> std::io::Result<Download> {
    let socket = TcpSocket::new_v4()?;
    // The kernel doubles it; autotuning is off once it is set.
    socket.set_recv_buffer_size(16 * 1024)?;
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await?;
    s.write_all(
        format!(
            "GET /pluginfile.php/big.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the headers"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    headers_seen.fetch_add(1, Ordering::SeqCst);
    let mut received = (head.len() - body_start) as u64;
    let started = Instant::now();
    let mut ended_early = false;
    loop {
        // The deadline is set once every client has its headers.
        if let Some(deadline) = deadline.get() {
            if Instant::now() >= *deadline {
                break;
            }
        }
        let due = started + Duration::from_secs_f64(received as f64 / RATE as f64);
        tokio::time::sleep_until(due.into()).await;
        match s.read(&mut buf).await {
            Ok(0) => {
                ended_early = true;
                break;
            }
            Ok(n) => received += n as u64,
            Err(_) => {
                ended_early = true;
                break;
            }
        }
    }
    Ok(Download {
        status,
        content_length,
        received,
        ended_early,
    })
}

/// The memory and thread lines of /proc/PID/status, for the report.
fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            ["VmRSS", "RssAnon", "RssFile", "Threads"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `moodle_edge_offload_active_streams` from the admin listener.
async fn active_streams(admin_port: u16) -> Option<f64> {
    tokio::task::spawn_blocking(move || {
        sendfile_common::metric(admin_port, "moodle_edge_offload_active_streams ")
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downloads_hold_little_memory_and_no_upstream() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("moodledata");
    std::fs::create_dir_all(&root).unwrap();
    // Sparse: a GiB of zeros that takes no disk.
    std::fs::File::create(root.join("big.bin"))
        .unwrap()
        .set_len(FILE_LEN)
        .unwrap();

    let standin = Standin::start();
    let proxy = Proxy::start(
        standin.addr,
        &root,
        &format!("  pool_max_idle_per_host: {POOL}"),
    );
    let port = proxy.port;

    // Warm up the offload path (blocking pool, allocator) with one ranged read, so the
    // baseline is a proxy that has already served a file.
    let warm = tokio::task::spawn_blocking(move || {
        sendfile_common::request(
            port,
            "GET",
            "/pluginfile.php/big.bin",
            &[("Range", "bytes=0-1048575")],
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(warm.status, 206);
    assert_eq!(warm.body.len(), 1 << 20);
    let pid = proxy.pid();
    let baseline = rss_kib(pid);
    assert!(baseline > 0, "cannot read VmRSS of {pid}");

    let requests_before = standin.requests();
    let headers_seen = Arc::new(AtomicUsize::new(0));
    let deadline = Arc::new(tokio::sync::OnceCell::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(slow_download(port, headers_seen.clone(), deadline.clone())))
        .collect();

    // All headers out (bounded wait, not a timing assertion).
    let wait_until = Instant::now() + Duration::from_secs(30);
    while headers_seen.load(Ordering::SeqCst) < CLIENTS {
        assert!(
            Instant::now() < wait_until,
            "only {} of {CLIENTS} downloads got their headers\n{}",
            headers_seen.load(Ordering::SeqCst),
            proxy.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now() + RUN;
    deadline.set(end).unwrap();

    // The offload answers went back to the pool; the extras beyond POOL are closed.
    let wait_until = Instant::now() + Duration::from_secs(5);
    while standin.open() > POOL as i64 {
        assert!(
            Instant::now() < wait_until,
            "the stand-in still has {} connections open (pool {POOL}) while files stream",
            standin.open()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // While the downloads run: sample memory and the upstream.
    let mut peak = baseline;
    let mut peak_status = proc_status(pid);
    let mut samples = 0;
    let mut active_seen = None;
    while Instant::now() < end {
        let rss = rss_kib(pid);
        if rss > peak {
            peak = rss;
            peak_status = proc_status(pid);
        }
        assert_eq!(
            standin.in_flight(),
            0,
            "the stand-in has a request in flight during the downloads"
        );
        assert!(
            standin.open() <= POOL as i64,
            "the stand-in has {} connections open (pool {POOL})",
            standin.open()
        );
        if active_seen.is_none() {
            active_seen = active_streams(proxy.admin_port).await;
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One upstream request per download, none repeated.
    assert_eq!(standin.requests() - requests_before, CLIENTS as u64);

    let mut total = 0u64;
    for client in clients {
        let d = client.await.unwrap().expect("download failed");
        assert_eq!(d.status, 200);
        assert_eq!(d.content_length, Some(FILE_LEN));
        assert!(!d.ended_early, "a download was cut off by the proxy");
        assert!(d.received > 0 && d.received < FILE_LEN);
        total += d.received;
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{CLIENTS} slow downloads for {RUN:?}: {} MiB received in all, proxy RSS baseline {} KiB, \
         peak {peak} KiB (+{growth} KiB over {samples} samples), active streams seen {active_seen:?}, \
         stand-in connections open {} (pool {POOL}), accepted {}",
        total >> 20,
        baseline,
        standin.open(),
        standin.accepted(),
    );
    eprintln!("proxy at its peak: {peak_status}");
    assert_eq!(active_seen, Some(CLIENTS as f64), "active streams gauge");
    assert!(
        growth < MAX_GROWTH_KIB,
        "proxy RSS grew by {growth} KiB (baseline {baseline} KiB, peak {peak} KiB), bound {MAX_GROWTH_KIB} KiB"
    );

    // The clients are gone: every file body must have been dropped.
    let wait_until = Instant::now() + Duration::from_secs(10);
    loop {
        let active = active_streams(proxy.admin_port).await;
        if active == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < wait_until,
            "active streams still {active:?} after the clients left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
