//! The web-service guard stage per request: parameter reading, policy, rate limits, breaker,
//! concurrency slot, then finish. Targets: < 2 µs for a GET, < 5 µs for a 4 KB urlencoded POST.
//!
//! Run: `cargo bench --bench guard`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use moodle_edge::internals::body;
use moodle_edge::internals::webservice::config::WebserviceConfig;
use moodle_edge::internals::webservice::outcome::{CallReport, OutcomeClass};
use moodle_edge::internals::webservice::params::{inspect_body, merge, query_params};
use moodle_edge::internals::webservice::{Guard, WebserviceMetrics, WsCall};

const CONFIG: &str = "
rate_limits:
  - {key: ip, rate: 10000000/s, burst: 1000000}
  - {key: token, rate: 10000000/s, burst: 1000000}
  - {key: function, rate: 10000000/s, burst: 1000000, functions: [core_user_*]}
max_concurrent_per_token: 4
function_policy:
  - {path: /webservice/rest/server.php, deny: [tool_*, core_auth_*]}
circuit_breaker: {window: 30s, min_requests: 20, per_function: true}
";

const PATH: &str = "/webservice/rest/server.php";
const TOKENS: usize = 16;

fn ok_report() -> CallReport {
    CallReport {
        class: OutcomeClass::Ok,
        exception: None,
        errorcode: None,
        status: Some(200),
        bytes: 512,
        ended_cleanly: true,
    }
}

fn setup() -> (tokio::runtime::Runtime, Guard) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg: WebserviceConfig = serde_saphyr::from_str(CONFIG).expect("config");
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(WebserviceMetrics::register(&registry).expect("metrics"));
    let guard = Guard::new(&cfg, metrics).expect("guard");
    (rt, guard)
}

fn bench_guard(c: &mut Criterion) {
    let (rt, guard) = setup();
    let _enter = rt.enter();
    let queries: Vec<String> = (0..TOKENS)
        .map(|i| {
            format!(
                "wstoken={:032x}&wsfunction=core_user_get_users_by_field&moodlewsrestformat=json&field=id&values%5B0%5D=42",
                i + 1
            )
        })
        .collect();
    let ips: Vec<IpAddr> = (0..TOKENS)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8)))
        .collect();
    let report = ok_report();

    let mut i = 0usize;
    c.bench_function("ws_guard_get", |b| {
        b.iter(|| {
            i = (i + 1) % TOKENS;
            let kind = guard.entry_kind(PATH).expect("entry");
            let params = merge(kind, &query_params(&queries[i]), None);
            let call = WsCall::new(kind, PATH, ips[i], params);
            let admission = guard
                .admit(&call)
                .now_or_never()
                .expect("admit without waiting")
                .expect("admitted");
            admission.finish(&report, Duration::from_millis(20));
        })
    });

    let bodies: Vec<Bytes> = (0..TOKENS)
        .map(|t| {
            let mut s = String::new();
            let mut n = 0;
            while s.len() < 4000 {
                s.push_str(&format!(
                    "users%5B{n}%5D%5Busername%5D=student{n}&users%5B{n}%5D%5Bemail%5D=student{n}%40example.org&"
                ));
                n += 1;
            }
            s.push_str(&format!("wstoken={:032x}&wsfunction=core_user_create_users", t + 1));
            Bytes::from(s)
        })
        .collect();
    let max = guard.max_inspect_body();
    let mut i = 0usize;
    c.bench_function("ws_guard_post_4k", |b| {
        b.iter(|| {
            i = (i + 1) % TOKENS;
            let kind = guard.entry_kind(PATH).expect("entry");
            let query = query_params("moodlewsrestformat=json");
            let (found, body) = inspect_body(
                Some("application/x-www-form-urlencoded"),
                body::full(bodies[i].clone()),
                max,
            )
            .now_or_never()
            .expect("in-memory body")
            .expect("readable");
            let params = merge(kind, &query, Some(&found));
            let call = WsCall::new(kind, PATH, ips[i], params);
            let admission = guard
                .admit(&call)
                .now_or_never()
                .expect("admit without waiting")
                .expect("admitted");
            admission.finish(&report, Duration::from_millis(20));
            body
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_guard
}
criterion_main!(benches);
