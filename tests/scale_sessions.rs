//! Two moodle-edge replicas (A and B, real binaries) sharing sessions through a real
//! redis-server, behind one public wwwroot, with the real oidc-provider and the stand-in Moodle.
//!
//! The public address is B's socket; a request "through A" goes to A's socket with the public
//! Host, as a load balancer that keeps Host would send it. So the provider's redirect after a
//! login started on A lands on B.
//!
//! Faults (bounded in time, every answer within 10 s): Redis stopped and restarted and Redis
//! frozen under a small load, and a replica killed mid-request; the figures are printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sso_common;
mod store_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sso_common::*;
use store_common::Redis;

const WANTS: &str = "/course/view.php?id=3";

/// One replica: the binary with a `store: redis` section.
struct Replica {
    process: EdgeProcess,
    addr: SocketAddr,
}

impl Replica {
    fn start(public: &str, moodle: &str, issuer: &str, redis_port: u16, store: Value) -> Replica {
        Self::start_on(free_port(), public, moodle, issuer, redis_port, store)
    }

    fn start_on(
        port: u16,
        public: &str,
        moodle: &str,
        issuer: &str,
        redis_port: u16,
        store: Value,
    ) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("userkey-token"), USERKEY_TOKEN).unwrap();
        std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let mut sso = oidc_sso("campus", issuer);
        sso["moodle_handoff"]["token_file"] = format!("{d}/userkey-token").into();
        sso["providers"][0]["client_secret_file"] = format!("{d}/client-secret").into();
        let dataroot = dir.path().join("moodledata");
        std::fs::create_dir_all(&dataroot).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let mut store_section = json!({
            "backend": "redis",
            "redis_url": format!("redis://127.0.0.1:{redis_port}/0"),
            "redis_connect_timeout": "300ms",
            "redis_command_timeout": "300ms",
        });
        for (k, v) in store.as_object().unwrap() {
            store_section[k] = v.clone();
        }
        let config = json!({
            "server": {
                "listen": [{ "addr": addr.to_string() }],
                "admin_addr": admin,
                "worker_threads": 2,
                "shutdown_timeout": "2s",
            },
            "upstream": { "url": moodle, "connect_timeout": "1s", "response_timeout": "10s" },
            "moodle": { "wwwroot": format!("http://{public}"), "dataroot": dataroot },
            "sso": sso,
            "store": store_section,
            "log": { "level": "info", "format": "json", "access": { "format": "json", "target": "stdout" } },
        });
        let text = serde_json::to_string_pretty(&config).unwrap();
        let mut process = EdgeProcess::spawn(dir, BIN, &text, &[]);
        process.wait_listening(&[addr.to_string(), admin], Duration::from_secs(15));
        Replica { process, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

struct World {
    redis: Redis,
    moodle: Moodle,
    op: OidcPeer,
    a: Replica,
    b: Replica,
    /// host:port of the public wwwroot (B's socket).
    public: String,
}

/// Redis, Moodle, the provider (back-channel logouts go to A) and both replicas. The session
/// cache TTL is long, so only the logout push can end a cached session quickly.
fn world(redis: Redis, store: Value) -> World {
    let moodle = Moodle::start(&["alice", "bob"]);
    let b_port = free_port();
    let public = format!("127.0.0.1:{b_port}");
    let a_port = free_port();
    let op = OidcPeer::real_with_backchannel(
        b_port,
        Some(format!(
            "http://127.0.0.1:{a_port}/auth/oidc/backchannel-logout"
        )),
    );
    let a = Replica::start_on(
        a_port,
        &public,
        &moodle.url(),
        &op.issuer(),
        redis.port,
        store.clone(),
    );
    let b = Replica::start_on(
        b_port,
        &public,
        &moodle.url(),
        &op.issuer(),
        redis.port,
        store,
    );
    World {
        redis,
        moodle,
        op,
        a,
        b,
        public,
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl World {
    /// A request through `edge` as the load balancer would send it (the public Host).
    async fn via(&self, b: &Browser, edge: &Replica, method: &str, path: &str) -> Page {
        b.send(method, &edge.url(path), None, Some(&self.public))
            .await
    }

    /// A login started on A: the provider's redirect back lands on B (the public address).
    async fn login_started_on_a(&self, b: &Browser, who: &str) -> String {
        let start = format!("/auth/login?provider=campus&return={}", urlencode(WANTS));
        let first = self.via(b, &self.a, "GET", &start).await;
        assert_eq!(first.status, 303, "{}", first.text);
        let mut pages = b.follow(first).await;
        for _ in 0..4 {
            let last = pages.last().unwrap().clone();
            if !last.text.contains("<form") || !last.url.path().starts_with("/interaction/") {
                break;
            }
            let fill: Vec<(&str, &str)> = if last.text.contains("name=\"login\"") {
                vec![("login", who), ("password", "any")]
            } else {
                vec![]
            };
            pages.extend(b.submit(&last, &fill).await);
        }
        let callback = pages
            .iter()
            .find(|p| p.url.path() == "/auth/oidc/callback")
            .expect("the provider sent the browser back");
        assert_eq!(
            callback.url.port(),
            Some(self.b.addr.port()),
            "the callback landed on B"
        );
        let last = pages.last().unwrap();
        assert_eq!(
            last.text,
            format!("Logged in as {who} at {WANTS}"),
            "{:?}\nA: {}\nB: {}",
            pages
                .iter()
                .map(|p| (p.status, p.url.to_string()))
                .collect::<Vec<_>>(),
            self.a.process.output(),
            self.b.process.output()
        );
        b.cookie("127.0.0.1", "moodle-edge-sso")
            .expect("edge session cookie")
    }
}

/// A plain client that follows no redirect, gives up after 10 s.
fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Whether the edge ended the session on this answer: it sends the browser back with the edge
/// cookie cleared (Moodle's own answers never touch that cookie).
fn ended(r: &reqwest::Response) -> bool {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").starts_with("moodle-edge-sso=;"))
}

/// What `edge` says to a request carrying only this edge session cookie: 200 when alive (sent
/// on to Moodle, whatever Moodle answers), 303 when ended, 0 without an answer.
async fn probe(client: &reqwest::Client, public: &str, edge: &Replica, sid: &str) -> u16 {
    match client
        .get(edge.url(WANTS))
        .header("host", public)
        .header("cookie", format!("moodle-edge-sso={sid}"))
        .send()
        .await
    {
        Ok(r) if ended(&r) => 303,
        Ok(_) => 200,
        Err(_) => 0,
    }
}

/// Polls until `edge` answers `want` for the session, at most `limit`; how long it took.
async fn until_status(
    client: &reqwest::Client,
    w: &World,
    edge: &Replica,
    sid: &str,
    want: u16,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = probe(client, &w.public, edge, sid).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {got} (not {want}) after {limit:?}\nA: {}\nB: {}",
            w.a.process.output(),
            w.b.process.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_log(edge: &Replica, parts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = edge.process.output();
        if out.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn long_cache() -> Value {
    json!({ "session_cache": { "ttl": "60s" } })
}

#[tokio::test]
async fn a_login_started_on_a_completes_on_b_and_the_session_holds_on_both() {
    let w = world(Redis::start(&[]), long_cache());
    let b = Browser::new();
    let sid = w.login_started_on_a(&b, "alice").await;
    // The browser goes on through either replica.
    for edge in [&w.a, &w.b, &w.a] {
        let page = w.via(&b, edge, "GET", WANTS).await;
        assert_eq!(page.text, format!("Logged in as alice at {WANTS}"));
    }
    let c = raw();
    assert_eq!(probe(&c, &w.public, &w.a, &sid).await, 200);
    assert_eq!(probe(&c, &w.public, &w.b, &sid).await, 200);
    // In Redis under the hash of the id, never the id itself.
    let keys = w.redis.cli(&["keys", "moodle-edge:sso:s:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!keys.contains(&sid));
    drop(w.moodle);
}

#[tokio::test]
async fn a_logout_on_a_ends_the_session_on_b_within_a_second() {
    let w = world(Redis::start(&[]), long_cache());
    let c = raw();

    // Front-channel: the logout form on A.
    let alice = Browser::new();
    let sid = w.login_started_on_a(&alice, "alice").await;
    // B has read it (and keeps a copy for 60 s).
    assert_eq!(probe(&c, &w.public, &w.b, &sid).await, 200);
    assert_eq!(probe(&c, &w.public, &w.b, &sid).await, 200);
    let confirm = w.via(&alice, &w.a, "GET", "/auth/logout").await;
    let csrf = confirm
        .text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the confirmation carries the token")
        .to_string();
    let done = alice
        .send(
            "POST",
            &w.a.url("/auth/logout"),
            Some(&[("csrf", csrf.as_str())]),
            Some(&w.public),
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text);
    let took = until_status(&c, &w, &w.b, &sid, 303, Duration::from_secs(1)).await;
    println!("front-channel logout on A held on B after {took:?}");

    // Back-channel: the provider tells A; B's cached copy goes too.
    let bob = Browser::new();
    let sid = w.login_started_on_a(&bob, "bob").await;
    assert_eq!(probe(&c, &w.public, &w.b, &sid).await, 200);
    let end = bob
        .get(&format!(
            "{}/session/end?client_id={CLIENT_ID}",
            w.op.issuer()
        ))
        .await;
    bob.submit(&end, &[("logout", "yes")]).await;
    wait_log(&w.a, &["back-channel logout", "\"sessions\":1"]).await;
    let took = until_status(&c, &w, &w.b, &sid, 303, Duration::from_secs(1)).await;
    println!("back-channel logout on A held on B after {took:?}");
    assert_eq!(probe(&c, &w.public, &w.a, &sid).await, 303);
}

#[tokio::test]
async fn a_completed_login_survives_a_redis_restart_with_persistence() {
    let mut w = world(Redis::start_persistent(), json!({}));
    let b = Browser::new();
    let sid = w.login_started_on_a(&b, "alice").await;
    w.redis.restart();
    let keys = w.redis.cli(&["keys", "moodle-edge:sso:s:*"]);
    assert_eq!(
        keys.lines().count(),
        1,
        "the session is in the restarted redis"
    );
    // A replica started now has no copy of its own: the session comes from Redis.
    let c = Replica::start(
        &w.public,
        &w.moodle.url(),
        &w.op.issuer(),
        w.redis.port,
        json!({}),
    );
    let client = raw();
    until_status(&client, &w, &c, &sid, 200, Duration::from_secs(10)).await;
    until_status(&client, &w, &w.b, &sid, 200, Duration::from_secs(10)).await;
}

// ------------------------------------------------------------------------------------------
// faults under load

/// Counts per kind of request: as the policy wants, refused by the policy (503), or failed
/// (anything else: a wrong status, a transport error, no answer within 10 s).
#[derive(Default)]
struct Tally {
    served: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    slowest_ms: AtomicU64,
}

impl Tally {
    fn line(&self, what: &str) -> String {
        format!(
            "{what}: served {} refused {} failed {} slowest {} ms",
            self.served.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.slowest_ms.load(Ordering::Relaxed)
        )
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    /// Pages without a session: always served.
    pages: Arc<Tally>,
    /// A session the replica has cached: served.
    session: Arc<Tally>,
    /// New logins: a redirect to the provider, or refused (503) while the store fails.
    logins: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Three clients (a page, a session, a login) in a loop against `targets`, until stopped.
fn load(public: &str, targets: Vec<String>, sid: &str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let (pages, session, logins) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let mut tasks = Vec::new();
    for (kind, tally) in [("page", &pages), ("session", &session), ("login", &logins)] {
        for base in &targets {
            let (stop, tally, base) = (stop.clone(), tally.clone(), base.clone());
            let (public, sid) = (public.to_string(), sid.to_string());
            tasks.push(tokio::spawn(async move {
                let c = raw();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut req = match kind {
                        "page" => c.get(format!("{base}/theme/styles.php")),
                        "session" => c
                            .get(format!("{base}{WANTS}"))
                            .header("cookie", format!("moodle-edge-sso={sid}")),
                        _ => c.get(format!("{base}/auth/login?provider=campus")),
                    };
                    req = req.header("host", &public);
                    // Moodle's own answer (a page or its redirect) counts as served, unless
                    // the edge ended the session on it.
                    let (status, edge_ended) = match req.send().await {
                        Ok(r) => (r.status().as_u16(), ended(&r)),
                        Err(_) => (0, false),
                    };
                    let ms = start.elapsed().as_millis() as u64;
                    tally.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                    let counter = match (kind, status) {
                        ("page" | "session", 200..=399) if !edge_ended => &tally.served,
                        ("login", 303) => &tally.served,
                        ("login", 503) => &tally.refused,
                        _ => &tally.failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // Paced: a small load, not a benchmark.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    Load {
        stop,
        pages,
        session,
        logins,
        tasks,
    }
}

impl Load {
    async fn wait_more(&self, tally: &Tally, field: fn(&Tally) -> u64, n: u64, what: &str) {
        let target = field(tally) + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while field(tally) < target {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self, title: &str) -> (Arc<Tally>, Arc<Tally>, Arc<Tally>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        println!("{title}");
        println!("  {}", self.pages.line("pages without a session"));
        println!("  {}", self.session.line("a cached session"));
        println!("  {}", self.logins.line("new logins"));
        (self.pages, self.session, self.logins)
    }
}

fn served(t: &Tally) -> u64 {
    t.served.load(Ordering::Relaxed)
}
fn refused(t: &Tally) -> u64 {
    t.refused.load(Ordering::Relaxed)
}

/// The documented policy under every fault: pages and cached sessions served, logins refused
/// while the store fails, nothing failed, nothing slower than 10 s.
fn assert_policy(tallies: &(Arc<Tally>, Arc<Tally>, Arc<Tally>)) {
    let (pages, session, logins) = tallies;
    for t in [pages, session, logins] {
        assert_eq!(t.failed.load(Ordering::Relaxed), 0);
        assert!(t.slowest_ms.load(Ordering::Relaxed) < 10_000);
    }
}

#[tokio::test]
async fn redis_stopped_and_restarted_then_frozen_under_load() {
    // Persistent, so the session is still there when Redis is back (the caches are dropped
    // when the pub/sub connection is re-made, and the session is read again).
    let mut w = world(Redis::start_persistent(), long_cache());
    let b = Browser::new();
    let sid = w.login_started_on_a(&b, "alice").await;
    let c = raw();
    // Both replicas hold a copy now.
    assert_eq!(probe(&c, &w.public, &w.a, &sid).await, 200);
    assert_eq!(probe(&c, &w.public, &w.b, &sid).await, 200);
    let targets = vec![w.a.url(""), w.b.url("")];

    let l = load(&w.public, targets.clone(), &sid);
    l.wait_more(&l.logins, served, 4, "logins before the fault")
        .await;
    w.redis.stop();
    l.wait_more(&l.logins, refused, 4, "logins refused with redis down")
        .await;
    l.wait_more(&l.pages, served, 10, "pages with redis down")
        .await;
    l.wait_more(&l.session, served, 10, "sessions with redis down")
        .await;
    w.redis.restart();
    l.wait_more(
        &l.logins,
        served,
        4,
        "logins after redis is back (no proxy restart)",
    )
    .await;
    let t = l.finish("redis stopped, then restarted:").await;
    assert_policy(&t);
    let refusal = w.via(&b, &w.a, "GET", "/auth/login?provider=campus").await;
    assert_eq!(refusal.status, 303, "logins work again");

    let l = load(&w.public, targets, &sid);
    l.wait_more(&l.logins, served, 4, "logins before the freeze")
        .await;
    w.redis.freeze();
    l.wait_more(&l.logins, refused, 4, "logins refused with redis frozen")
        .await;
    l.wait_more(&l.pages, served, 10, "pages with redis frozen")
        .await;
    l.wait_more(&l.session, served, 10, "sessions with redis frozen")
        .await;
    // The clear page says what happened.
    let page = w.via(&b, &w.b, "GET", "/auth/login?provider=campus").await;
    assert_eq!(page.status, 503);
    assert!(
        page.text.contains("Sign-in is unavailable"),
        "{}",
        page.text
    );
    w.redis.thaw();
    l.wait_more(&l.logins, served, 4, "logins after SIGCONT")
        .await;
    let t = l.finish("redis frozen (SIGSTOP), then thawed:").await;
    assert_policy(&t);
    for edge in [&w.a, &w.b] {
        let out = edge.process.output();
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[tokio::test]
async fn a_replica_killed_mid_request_leaves_the_other_serving_the_session() {
    let w = world(Redis::start(&[]), json!({}));
    let b = Browser::new();
    let sid = w.login_started_on_a(&b, "alice").await;
    let on_b = load(&w.public, vec![w.b.url("")], &sid);
    on_b.wait_more(&on_b.session, served, 10, "sessions on B")
        .await;
    // SIGKILL while B's clients have requests in flight.
    w.b.process.signal("KILL");
    let gone = Instant::now();
    on_b.wait_more(
        &on_b.session,
        |t| t.failed.load(Ordering::Relaxed),
        3,
        "B's clients to see it gone",
    )
    .await;
    let (pages, session, logins) = on_b
        .finish("replica B killed mid-request (its own clients):")
        .await;
    for t in [&pages, &session, &logins] {
        assert!(
            t.slowest_ms.load(Ordering::Relaxed) < 10_000,
            "an answer took over 10 s"
        );
    }
    println!("B's clients saw errors within {:?}", gone.elapsed());
    // A serves the same session (read from Redis: it never had a copy) and new logins.
    let on_a = load(&w.public, vec![w.a.url("")], &sid);
    on_a.wait_more(&on_a.session, served, 10, "the session on A")
        .await;
    on_a.wait_more(&on_a.logins, served, 3, "logins on A").await;
    let t = on_a.finish("replica A after B was killed:").await;
    assert_policy(&t);
    drop(w.redis);
}
