//! Bodies stream through the proxy in both directions: a 256 MiB upload and download pass whole
//! while the proxy's RSS stays flat, and a client that vanishes mid-upload harms nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const BIG: u64 = 256 << 20;
const CHUNK: u64 = 256 << 10;
/// The RSS growth a streaming proxy must stay under while moving BIG bytes.
const RSS_BUDGET_KIB: u64 = 64 << 10;

/// Samples the proxy's VmRSS every 20ms until dropped; `max()` is the peak seen.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_of(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256mib_chunked_upload_streams_whole_with_flat_rss() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["limits"]["max_body_size"] = serde_json::json!("1GiB");
    });
    let http = client();
    assert_eq!(
        http.get(proxy.url("/warmup"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let baseline = proxy.rss_kib();
    let watch = RssWatch::start(proxy.pid());

    // Generated on the fly, hashed as it is sent; never held in memory.
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let chunks = (0..BIG / CHUNK).map(move |i| {
        let chunk = pattern(i * CHUNK, CHUNK as usize);
        h.lock().unwrap().update(&chunk);
        Ok::<_, std::io::Error>(chunk)
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = http
        .post(proxy.url("/repository/upload.php"))
        .body(body)
        .send()
        .await
        .unwrap();
    let peak = watch.peak();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let sent_sha = hex::encode(hasher.lock().unwrap().clone().finalize());
    assert_eq!(echo["body_len"], BIG);
    assert_eq!(echo["sha256"], sent_sha);
    assert_eq!(
        up.seen_path("/repository/upload.php")[0].header("transfer-encoding"),
        Some("chunked")
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB while streaming {BIG} bytes"
    );
    eprintln!("upload: RSS {baseline} KiB -> peak {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256mib_download_streams_whole_with_flat_rss() {
    let up = Upstream::start();
    up.route("/big", Reply::pattern(BIG));
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let http = client();
    assert_eq!(
        http.get(proxy.url("/warmup"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let baseline = proxy.rss_kib();
    let watch = RssWatch::start(proxy.pid());

    let mut resp = http.get(proxy.url("/big")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(BIG));
    let mut received = 0u64;
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        assert!(
            chunk == pattern(received, chunk.len()),
            "wrong bytes at offset {received}"
        );
        hasher.update(&chunk);
        received += chunk.len() as u64;
    }
    let peak = watch.peak();
    assert_eq!(received, BIG);
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB while streaming {BIG} bytes"
    );
    eprintln!("download: RSS {baseline} KiB -> peak {peak} KiB");
    let line = proxy.access_line_for("/big");
    assert_eq!(line["bytes_sent"], BIG);
    assert_eq!(line["complete"], true);
    let _ = hasher.finalize();
}

#[test]
fn a_client_vanishing_mid_upload_is_logged_and_harmless() {
    let up = Upstream::start();
    let mut proxy = Proxy::start(&up.url(), |_, _| {});
    {
        let mut raw = Raw::connect(proxy.addr()).unwrap();
        raw.send(b"POST /gone-upload?id=7 HTTP/1.1\r\nHost: lms.test\r\nContent-Length: 10485760\r\n\r\n")
            .unwrap();
        raw.send(&pattern(0, 1 << 20)).unwrap();
        wait_for(
            "the upload to reach the upstream",
            Duration::from_secs(5),
            || !up.seen_path("/gone-upload").is_empty(),
        );
        // Dropped here: the client disappears 9 MiB short.
    }
    let line = proxy.access_line_for("/gone-upload");
    assert!(line["status"].as_u64().unwrap() >= 400, "{line}");
    assert_eq!(line["note"], "client_gone", "{line}");
    assert!(proxy.is_running());
    assert_eq!(get(proxy.addr(), "/after", "").status, 200);
    assert!(up
        .seen_path("/gone-upload")
        .iter()
        .all(|s| s.body.is_none()));
}
