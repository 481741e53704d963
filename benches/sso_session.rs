//! The SSO session check every proxied request pays: with the memory store, a request with no
//! edge cookie (one header scan) and one with a live session (cookie scan, id check, hash, one
//! moka lookup, decode, lifetime checks; the bar: under 2 µs); then the same live-session check
//! against a real redis-server on loopback (started here, stopped by PID), with the replica's
//! session cache (a hit) and without it (one round trip each). Before criterion, each case is
//! also timed one by one to print its median and p99. Results: docs/scale-out.md, docs/sso.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code may panic

use std::future::Future;
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use moodle_edge::internals::sso::session::SessionProbe;

/// Runs a future that finishes without waiting (the memory store never waits).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store waited"),
    }
}

/// A redis-server of the bench's own, without persistence, killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/install-test-deps.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Median and p99 of `n` checks timed one by one.
fn percentiles(label: &str, n: usize, mut check: impl FnMut()) {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            check();
            s.elapsed()
        })
        .collect();
    t.sort();
    println!(
        "{label}: median {:.2} us, p99 {:.2} us ({n} checks)",
        t[n / 2].as_secs_f64() * 1e6,
        t[n * 99 / 100].as_secs_f64() * 1e6
    );
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

    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cached, uncached, cached_h, uncached_h) = rt.block_on(async {
        let cached = SessionProbe::redis(&url, Duration::from_secs(5)).unwrap();
        let uncached = SessionProbe::redis(&url, Duration::ZERO).unwrap();
        let (ch, uh) = (cached.login().await, uncached.login().await);
        assert!(cached.check(&ch).await && uncached.check(&uh).await);
        (cached, uncached, ch, uh)
    });

    percentiles("memory store, live session", 20_000, || {
        assert!(now(probe.check(&with_session)))
    });
    percentiles("redis store, session in the replica cache", 20_000, || {
        assert!(rt.block_on(cached.check(&cached_h)))
    });
    percentiles("redis store, no cache (one round trip)", 5_000, || {
        assert!(rt.block_on(uncached.check(&uncached_h)))
    });

    let mut g = c.benchmark_group("sso_session_check");
    g.bench_function("live_session", |b| {
        b.iter(|| now(probe.check(&with_session)))
    });
    g.bench_function("no_edge_cookie", |b| b.iter(|| now(probe.check(&without))));
    g.bench_function("redis_cached", |b| {
        b.iter(|| rt.block_on(cached.check(&cached_h)))
    });
    g.bench_function("redis_round_trip", |b| {
        b.iter(|| rt.block_on(uncached.check(&uncached_h)))
    });
    g.finish();
    drop(redis);
}

criterion_group!(benches, session_check);
criterion_main!(benches);
