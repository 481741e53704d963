//! Criterion benches for the proxy core's per-request functions: header sanitizing,
//! X-Forwarded-* handling, routing, log redaction, and the direct upstream path's request
//! encoding and response-head parsing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Request;

use bytes::Bytes;
use moodle_edge::internals::observe::redact::redact_target;
use moodle_edge::internals::proxy::headers::request_header_kinds;
use moodle_edge::internals::proxy::sanitize::{sanitize, SanitizeInput};
use moodle_edge::internals::proxy::upstream::direct::{
    encode_head, parse_response_head, NameCache,
};
use moodle_edge::internals::route::{classify, RouteTable};
use moodle_edge::internals::webservice::entry;

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
    c.bench_function("sanitize_browser_request", |b| {
        b.iter_batched(
            || browser_request().into_parts().0,
            |mut parts| {
                // The pipeline scans the header kinds once, before sanitizing.
                let input = SanitizeInput {
                    peer: "192.0.2.7".parse().unwrap(),
                    peer_value: &peer_value,
                    tls: true,
                    trusted_proxies: &trusted,
                    max_body_size: 2 << 30,
                    upgrade: false,
                    kinds: request_header_kinds(&parts.headers),
                };
                black_box(sanitize(&mut parts, &input).is_ok())
            },
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

/// A page answer as Apache + PHP-FPM send it for a Moodle page.
const MOODLE_PAGE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Thu, 26 Nov 2026 10:00:00 GMT\r\n\
Server: Apache\r\n\
Set-Cookie: MoodleSession=0123456789abcdef0123456789; path=/; secure; HttpOnly\r\n\
Expires: Mon, 20 Aug 1969 09:23:00 GMT\r\n\
Cache-Control: private, pre-check=0, post-check=0, max-age=0, no-transform\r\n\
Pragma: no-cache\r\n\
Content-Language: en\r\n\
Content-Script-Type: text/javascript\r\n\
Content-Style-Type: text/css\r\n\
X-UA-Compatible: IE=edge\r\n\
Accept-Ranges: none\r\n\
X-Frame-Options: sameorigin\r\n\
Content-Length: 48213\r\n\
Keep-Alive: timeout=5, max=100\r\n\
Connection: Keep-Alive\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n";

fn bench_direct(c: &mut Criterion) {
    let peer_value = http::HeaderValue::from_static("192.0.2.7");
    let mut parts = browser_request().into_parts().0;
    let input = SanitizeInput {
        peer: "192.0.2.7".parse().unwrap(),
        peer_value: &peer_value,
        tls: true,
        trusted_proxies: &[],
        max_body_size: 2 << 30,
        upgrade: false,
        kinds: request_header_kinds(&parts.headers),
    };
    let sanitized = sanitize(&mut parts, &input).unwrap();
    let authority = http::HeaderValue::from_static("127.0.0.1:8081");
    c.bench_function("direct_encode_request_head", |b| {
        b.iter(|| {
            black_box(encode_head(black_box(&parts), Some(&sanitized.forward), &authority).len())
        })
    });
    let head = Bytes::from_static(MOODLE_PAGE_HEAD);
    c.bench_function("direct_parse_moodle_page_head", |b| {
        b.iter(|| {
            let parsed =
                parse_response_head(black_box(&head), false, &mut NameCache::default()).unwrap();
            black_box(parsed.map(|(p, len, keep)| (p.headers.len(), len, keep)))
        })
    });
    // The usual case: the connection's name cache knows the application's header names.
    let mut names = NameCache::default();
    c.bench_function("direct_parse_moodle_page_head_warm", |b| {
        b.iter(|| {
            let parsed = parse_response_head(black_box(&head), false, &mut names).unwrap();
            black_box(parsed.map(|(p, len, keep)| (p.headers.len(), len, keep)))
        })
    });
}

criterion_group!(
    benches,
    bench_sanitize,
    bench_route,
    bench_redact,
    bench_direct
);
criterion_main!(benches);
