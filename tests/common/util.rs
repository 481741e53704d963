//! Small helpers every integration-test harness shares: free ports, polling with a deadline,
//! sha256, process memory and Prometheus metric lines.
//!
//! Self-contained (std, `sha2`, `hex`, `tokio`), so a harness can mount it with
//! `#[path = "../common/util.rs"] mod util;`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The path the proxy's upstream health probe uses in every test config; the stand-ins answer
/// it without counting or recording it.
pub const PROBE_PATH: &str = "/__probe";

/// A port that was free a moment ago (bound, then dropped). Never hands out the same port twice
/// in one test process. Taken below the kernel's ephemeral range (32768-60999 by default), where
/// `bind :0` and every outgoing connection take theirs: a port from there can be taken by some
/// test's client connection between this check and the proxy's own bind ("Address already in
/// use" at start-up, seen in a full run).
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static NEXT: OnceLock<Mutex<u16>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    // Test binaries run one after another; each starts at its own place in the range.
    let next = NEXT.get_or_init(|| {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0);
        Mutex::new(FIRST + (seed % u64::from(LAST - FIRST)) as u16)
    });
    for _ in FIRST..LAST {
        let port = {
            let mut n = next.lock().unwrap();
            let port = *n;
            *n = if *n + 1 >= LAST { FIRST } else { *n + 1 };
            port
        };
        if used.lock().unwrap().contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.lock().unwrap().insert(port);
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{FIRST}-{LAST}");
}

/// Polls `cond` every 20ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`wait_for`], for use inside tokio tests.
pub async fn wait_for_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `VmRSS` of a process, in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The value of the sample named exactly `series` (name with its labels, as Prometheus writes
/// them; surrounding spaces ignored) in a /metrics text, or None.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let series = series.trim();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
