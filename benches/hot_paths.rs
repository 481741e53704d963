//! Criterion benches for the proxy core's per-request functions: header sanitizing,
//! X-Forwarded-* handling, routing and log redaction.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Request;

use moodle_edge::observe::redact::redact_target;
use moodle_edge::proxy::sanitize::{sanitize, SanitizeInput};
use moodle_edge::route::{classify, RouteTable};
use moodle_edge::webservice::entry;

fn browser_request() -> Request<()> {
    Request::get("/course/view.php?id=42")
        .header("host", "lms.example.edu")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-language", "en-GB,en;q=0.5")
        .header(
            "cookie",
            "MoodleSession=0123456789abcdef0123456789; MOODLEID1_=abc",
        )
        .header("connection", "keep-alive")
        .body(())
        .unwrap()
}

fn bench_sanitize(c: &mut Criterion) {
    let trusted = vec!["10.0.0.0/8".parse().unwrap()];
    let peer_value = http::HeaderValue::from_static("192.0.2.7");
    let input = SanitizeInput {
        peer: "192.0.2.7".parse().unwrap(),
        peer_value: &peer_value,
        tls: true,
        trusted_proxies: &trusted,
        max_body_size: 2 << 30,
        upgrade: false,
    };
    c.bench_function("sanitize_browser_request", |b| {
        b.iter_batched(
            || browser_request().into_parts().0,
            |mut parts| black_box(sanitize(&mut parts, &input).is_ok()),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench_route(c: &mut Criterion) {
    let extra = vec!["/local/hub/webservice.php".to_string()];
    let table = RouteTable {
        public_health_path: "/.moodle-edge/health",
        is_internal: &|p: &str| p.starts_with("/moodledata-internal/"),
        entry_kind: &|p: &str| entry::classify(p, &extra),
        sso_intercept: None,
        mnet: false,
    };
    c.bench_function("route_page", |b| {
        b.iter(|| classify(black_box("/course/view.php"), &table))
    });
    c.bench_function("route_webservice", |b| {
        b.iter(|| classify(black_box("/webservice/rest/server.php"), &table))
    });
}

fn bench_redact(c: &mut Criterion) {
    c.bench_function("redact_ws_query", |b| {
        b.iter(|| {
            redact_target(
                black_box("/webservice/rest/server.php"),
                Some(black_box("wstoken=0123456789abcdef0123456789abcdef&wsfunction=core_course_get_courses&moodlewsrestformat=json")),
            )
        })
    });
}

criterion_group!(benches, bench_sanitize, bench_route, bench_redact);
criterion_main!(benches);
