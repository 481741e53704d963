//! The SSO session check every proxied request pays, with the memory store: a request with no
//! edge cookie (one header scan) and one with a live session (cookie scan, id check, hash, one
//! moka lookup, decode, lifetime checks). The bar: under 2 µs. Results: docs/sso.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code may panic

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use moodle_edge::sso::session::SessionProbe;

/// Runs a future that finishes without waiting (the memory store never waits).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store waited"),
    }
}

fn session_check(c: &mut Criterion) {
    let probe = SessionProbe::memory();
    let with_session = now(probe.login());
    assert!(now(probe.check(&with_session)));
    let mut without = with_session.clone();
    without.insert(
        http::header::COOKIE,
        http::HeaderValue::from_static("MoodleSession=abcdef0123456789abcdef0123; MOODLEID1_=%25"),
    );
    let mut g = c.benchmark_group("sso_session_check");
    g.bench_function("live_session", |b| {
        b.iter(|| now(probe.check(&with_session)))
    });
    g.bench_function("no_edge_cookie", |b| b.iter(|| now(probe.check(&without))));
    g.finish();
}

criterion_group!(benches, session_check);
criterion_main!(benches);
