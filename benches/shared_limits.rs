//! The added latency of a rate-limit check in Redis (`store.backend: redis`, one GCRA script
//! call per check) against the local limiter: the whole guard admission (`Guard::admit` then
//! `finish`) per call, with the same rules, timed call by call, memory and Redis side by side
//! in alternating rounds; prints the median and p99 of each round and their differences.
//!
//! Starts its own redis-server on a free loopback port (killed at the end).
//! Run: `cargo bench --bench shared_limits` (ROUNDS, CALLS in the environment).

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code may panic

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moodle_edge::internals::store::config::{StoreBackend, StoreConfig};
use moodle_edge::internals::store::Store;
use moodle_edge::internals::webservice::config::WebserviceConfig;
use moodle_edge::internals::webservice::outcome::{CallReport, OutcomeClass};
use moodle_edge::internals::webservice::params::{merge, query_params};
use moodle_edge::internals::webservice::{Guard, WebserviceMetrics, WsCall};

const CONFIG: &str = "
rate_limits:
  - {key: ip, rate: 10000000/s, burst: 1000000}
  - {key: token, rate: 10000000/s, burst: 1000000}
max_concurrent_per_token: 4
circuit_breaker: {window: 30s, min_requests: 20}
";
const PATH: &str = "/webservice/rest/server.php";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn guard(store: &Store) -> Guard {
    let cfg: WebserviceConfig = serde_saphyr::from_str(CONFIG).expect("config");
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(WebserviceMetrics::register(&registry).expect("metrics"));
    Guard::with_store(&cfg, metrics, store).expect("guard")
}

/// Per-call times of `calls` admissions, 16 tokens in turn.
async fn round(guard: &Guard, calls: usize) -> Vec<Duration> {
    let report = CallReport {
        class: OutcomeClass::Ok,
        exception: None,
        errorcode: None,
        status: Some(200),
        bytes: 512,
        ended_cleanly: true,
    };
    let queries: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "wstoken={:032x}&wsfunction=core_webservice_get_site_info",
                i + 1
            )
        })
        .collect();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let kind = guard.entry_kind(PATH).expect("entry");
        let call = WsCall::new(
            kind,
            PATH,
            ip,
            merge(kind, &query_params(&queries[i % 16]), None),
        );
        let started = Instant::now();
        let admission = guard.admit(&call).await.expect("admitted");
        admission.finish(&report, Duration::from_millis(5));
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo test` runs benches without `--bench`: a smoke run, not the measurement.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds = if measuring { env("ROUNDS", 5) } else { 1 };
    let calls = if measuring { env("CALLS", 20_000) } else { 200 };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run scripts/install-test-deps.sh");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let memory = Store::build(&StoreConfig::default()).unwrap();
        let shared = Store::build(&StoreConfig {
            backend: StoreBackend::Redis,
            redis_url: format!("redis://127.0.0.1:{port}/0"),
            redis_key_prefix: "bench:".into(),
            ..StoreConfig::default()
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.ping().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (local, remote) = (guard(&memory), guard(&shared));
        // Warm-up: connections, script load, allocator.
        round(&local, 2_000).await;
        round(&remote, 2_000).await;
        println!("round | memory median p99 (us) | redis median p99 (us) | added median p99 (us)");
        let (mut added_med, mut added_p99) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let m = round(&local, calls).await;
            let x = round(&remote, calls).await;
            let (mm, m99, xm, x99) = (us(pct(&m, 0.5)), us(pct(&m, 0.99)), us(pct(&x, 0.5)), us(pct(&x, 0.99)));
            println!(
                "{r:>5} | {mm:>8.1} {m99:>8.1}     | {xm:>8.1} {x99:>8.1}    | {:>8.1} {:>8.1}",
                xm - mm,
                x99 - m99
            );
            added_med.push(xm - mm);
            added_p99.push(x99 - m99);
        }
        added_med.sort_by(f64::total_cmp);
        added_p99.sort_by(f64::total_cmp);
        println!(
            "median over {rounds} rounds of {calls} calls: added {:.1} us at the median, {:.1} us at p99",
            added_med[added_med.len() / 2],
            added_p99[added_p99.len() / 2]
        );
    });
    let _ = redis.kill();
    let _ = redis.wait();
}
