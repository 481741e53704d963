//! Operating the proxy: SIGHUP reloads, SIGTERM drains, the admin endpoints, the access log and
//! its redaction, `moodle-edge check`, and systemd socket activation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn echo_of(raw: &mut Raw, path: &str) -> RawResponse {
    raw.send(format!("GET {path} HTTP/1.1\r\nHost: lms.test\r\n\r\n").as_bytes())
        .unwrap();
    raw.read_response()
        .unwrap_or_else(|e| panic!("the keep-alive connection broke: {e}"))
}

// ---------------------------------------------------------------------------------------------
// lifecycle

#[test]
fn sighup_applies_a_changed_config_without_dropping_keepalive_connections() {
    let a = Upstream::named("A");
    let b = Upstream::named("B");
    let proxy = Proxy::start(&a.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    assert_eq!(echo_of(&mut raw, "/who").json()["upstream"], "A");
    assert_eq!(echo_of(&mut raw, "/lb-health").json()["upstream"], "A");

    let mut config = proxy.config.clone();
    config["upstream"]["url"] = json!(b.url());
    config["server"]["public_health_path"] = json!("/lb-health");
    proxy.write_config(&config);
    proxy.signal("HUP");

    // The same connection, never reopened, sees the new upstream...
    wait_for(
        "requests to go to upstream B",
        Duration::from_secs(5),
        || echo_of(&mut raw, "/who").json()["upstream"] == "B",
    );
    // ... and the new health path, answered by the edge itself.
    let health = echo_of(&mut raw, "/lb-health").json();
    assert!(health.get("checks").is_some(), "{health}");
    assert!(b.seen_path("/lb-health").is_empty());
    // The swap comes first, the log line and the counter right after it.
    wait_for("the reload to be logged", Duration::from_secs(5), || {
        proxy.stdout().contains("configuration reloaded")
    });
    wait_for("the reload to be counted", Duration::from_secs(5), || {
        proxy.metric("moodle_edge_config_reloads_total{result=\"ok\"}") == Some(1.0)
    });
}

#[test]
fn sighup_with_an_invalid_config_keeps_the_running_one() {
    let a = Upstream::named("A");
    let b = Upstream::named("B");
    let proxy = Proxy::start(&a.url(), |_, _| {});
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    assert_eq!(echo_of(&mut raw, "/who").json()["upstream"], "A");

    let mut config = proxy.config.clone();
    config["upstream"]["url"] = json!(b.url());
    config["server"]["limits"]["max_header_sise"] = json!("8KiB");
    proxy.write_config(&config);
    proxy.signal("HUP");
    wait_for(
        "the refused reload to be logged",
        Duration::from_secs(5),
        || proxy.stdout().contains("reload refused"),
    );
    assert!(
        proxy.stdout().contains("max_header_sise"),
        "{}",
        proxy.output()
    );
    assert_eq!(echo_of(&mut raw, "/who").json()["upstream"], "A");
    assert_eq!(get(proxy.addr(), "/who", "").json()["upstream"], "A");

    // Not even YAML.
    proxy.write_config_text("server: [unclosed\n");
    proxy.signal("HUP");
    wait_for("the second refused reload", Duration::from_secs(5), || {
        proxy.metric("moodle_edge_config_reloads_total{result=\"error\"}") == Some(2.0)
    });
    assert_eq!(echo_of(&mut raw, "/who").json()["upstream"], "A");
    assert!(b.seen().is_empty());
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let up = Upstream::start();
    up.route("/slow", Reply::echo().delay_ms(1500));
    let mut proxy = Proxy::start(&up.url(), |_, _| {});
    let addr = proxy.addr();
    let slow = std::thread::spawn(move || get(addr, "/slow", ""));
    wait_for(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || !up.seen_path("/slow").is_empty(),
    );
    proxy.signal("TERM");
    // New connections are refused while the slow one drains.
    wait_for(
        "new connections to be refused",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(addr).is_err(),
    );
    let resp = slow.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["uri"], "/slow");
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let up = Upstream::start();
    // A drain deadline far beyond the wait below: exiting within it means the idle connection
    // was closed by the drain, not cut at the deadline.
    let mut proxy = Proxy::start(&up.url(), |c, _| {
        c["server"]["shutdown_timeout"] = json!("60s");
        c["server"]["limits"]["header_read_timeout"] = json!("60s");
    });
    let mut raw = Raw::connect(proxy.addr()).unwrap();
    raw.send(b"GET /one HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert_eq!(raw.read_response().unwrap().status, 200);
    proxy.signal("TERM");
    assert!(
        raw.closed_within(Duration::from_secs(20)),
        "an idle keep-alive connection was not closed by the drain"
    );
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
}

// ---------------------------------------------------------------------------------------------
// admin

#[test]
fn metrics_expose_the_core_families() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&dead, |c, dir: &Path| {
        let (crt, key, _) = write_cert(dir, "a", &["a.test"]);
        let tls = json!({
            "addr": format!("127.0.0.1:{}", free_port()),
            "tls": { "certificates": [{ "cert_file": crt, "key_file": key }] },
        });
        c["server"]["listen"].as_array_mut().unwrap().push(tls);
    });
    assert_eq!(get(proxy.addr(), "/course/view.php", "").status, 502);
    let mut raw = Raw::connect(proxy.addrs[1]).unwrap();
    raw.send(b"not a TLS hello\r\n\r\n").unwrap();
    assert!(raw.closed_within(Duration::from_secs(5)));

    let families = [
        "moodle_edge_requests_total",
        "moodle_edge_request_duration_seconds",
        "moodle_edge_upstream_errors_total",
        "moodle_edge_requests_in_flight",
        "moodle_edge_connections_open",
        "moodle_edge_tls_handshake_failures_total",
        "moodle_edge_build_info",
    ];
    let mut text = String::new();
    wait_for("every core metric family", Duration::from_secs(5), || {
        let resp = proxy.admin_get("/metrics").unwrap();
        assert_eq!(resp.status, 200);
        text = resp.text();
        families
            .iter()
            .all(|f| text.contains(&format!("# TYPE {f} ")))
    });
    assert!(
        text.contains("moodle_edge_requests_total{") && text.contains("status=\"502\""),
        "{text}"
    );
    assert!(
        text.contains("moodle_edge_upstream_errors_total{kind=\"connect\"} 1"),
        "{text}"
    );
    assert!(text.contains("moodle_edge_build_info{"), "{text}");
    assert_eq!(proxy.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(proxy.admin_get("/nope").unwrap().status, 404);
    // The admin endpoints are not on the public port.
    let dead_up = get(proxy.addr(), "/metrics", "");
    assert_eq!(
        dead_up.status, 502,
        "/metrics on the public port was not forwarded"
    );
}

#[test]
fn readyz_and_the_public_health_path_follow_the_upstream() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    proxy.wait_ready();
    let ready = proxy.admin_get("/readyz").unwrap();
    assert_eq!(ready.json()["ready"], true);
    let public = get(proxy.addr(), "/.moodle-edge/health", "");
    assert_eq!(public.status, 200);
    assert!(up.seen().is_empty(), "the health path went upstream");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let down = Proxy::start(&dead, |_, _| {});
    let mut resp = None;
    wait_for("/readyz to fail", Duration::from_secs(5), || {
        resp = down.admin_get("/readyz").ok();
        resp.as_ref().is_some_and(|r| r.status == 503)
    });
    let v = resp.unwrap().json();
    assert_eq!(v["ready"], false);
    let failing: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{v}");
    assert_eq!(failing[0]["name"], "upstream");
    assert!(failing[0]["error"].is_string());
    assert_eq!(down.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(get(down.addr(), "/.moodle-edge/health", "").status, 503);
}

// ---------------------------------------------------------------------------------------------
// logs

#[test]
fn access_log_is_json_per_request_with_secrets_redacted() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let secrets = [
        "S3CRETwstoken",
        "S3CRETtoken",
        "S3CRETpassword",
        "S3CRETsesskey",
        "S3CRETreferer",
        "S3CRETbody",
        "S3CRETtpf",
        "S3CRETupper",
        "S3CRETpct",
    ];
    let r = get(
        proxy.addr(),
        "/webservice/rest/server.php?wstoken=S3CRETwstoken&wsfunction=core_webservice_get_site_info",
        "User-Agent: moodle-mobile\r\n",
    );
    assert_eq!(r.status, 200);
    get(
        proxy.addr(),
        "/webservice/pluginfile.php/1/a.pdf?token=S3CRETtoken&forcedownload=1",
        "",
    );
    get(
        proxy.addr(),
        "/course/mod.php?sesskey=S3CRETsesskey&PASSWORD=S3CRETupper&ws%74oken=S3CRETpct",
        "Referer: http://lms.test/course/view.php?id=2&sesskey=S3CRETreferer\r\n",
    );
    get(
        proxy.addr(),
        "/tokenpluginfile.php/S3CRETtpf/12/mod_resource/content/0/a.pdf",
        "",
    );
    let body = "username=admin&password=S3CRETbody";
    roundtrip(
        proxy.addr(),
        format!(
            "POST /login/index.php?password=S3CRETpassword HTTP/1.1\r\nHost: lms.test\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let ws = proxy.access_line_for("/webservice/rest/server.php");
    assert_eq!(
        ws["target"],
        "/webservice/rest/server.php?wstoken=[redacted]&wsfunction=core_webservice_get_site_info"
    );
    assert_eq!(ws["method"], "GET");
    assert_eq!(ws["status"], 200);
    assert_eq!(ws["user_agent"], "moodle-mobile");
    assert!(
        ws["request_id"].is_string()
            && ws["duration_ms"].is_number()
            && ws["bytes_sent"].is_number()
    );
    let login = proxy.access_line_for("/login/index.php");
    assert_eq!(login["method"], "POST");
    proxy.access_line_for("/tokenpluginfile.php/[redacted]/12/");
    let page = proxy.access_line_for("/course/mod.php?sesskey=[redacted]&PASSWORD=[redacted]");
    assert_eq!(
        page["referer"], "http://lms.test/course/view.php?id=2&sesskey=[redacted]",
        "{page}"
    );
    assert_eq!(proxy.access_lines().len(), 5, "{}", proxy.stdout());
    let everything = proxy.output();
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into the logs:\n{everything}"
        );
    }
}

#[test]
fn access_log_combined_format() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |c, _| {
        c["log"] = json!({ "access": { "format": "combined" } });
    });
    let r = get(
        proxy.addr(),
        "/combined?x=1&wstoken=S3CRETcombined",
        "User-Agent: curl/8\r\n",
    );
    assert_eq!(r.status, 200);
    let mut line = String::new();
    wait_for("a combined access-log line", Duration::from_secs(5), || {
        line = proxy
            .stdout()
            .lines()
            .find(|l| l.contains("/combined"))
            .unwrap_or_default()
            .to_string();
        !line.is_empty()
    });
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    let expected = format!(
        "] \"GET /combined?x=1&wstoken=[redacted] HTTP/1.1\" 200 {} \"-\" \"curl/8\"",
        r.body.len()
    );
    assert!(line.contains(&expected), "{line}");
    assert!(line.contains("rid="), "{line}");
    assert!(!proxy.output().contains("S3CRETcombined"));
}

// ---------------------------------------------------------------------------------------------
// moodle-edge check

/// Runs `moodle-edge check` on `config` (after `tweak`); returns (exit code, stdout + stderr).
fn check(tweak: impl FnOnce(&mut Value, &Path)) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), "http://127.0.0.1:9");
    tweak(&mut config, dir.path());
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    check_file(&path)
}

fn check_file(path: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_a_valid_config() {
    let (code, text) = check(|_, _| {});
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("is valid"), "{text}");
    // Block-style YAML too, the way operators write it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let yaml = format!(
        "server:\n  listen:\n    - addr: \"127.0.0.1:8080\"\n  limits:\n    max_body_size: 100MiB\n    header_read_timeout: 10s\n\
         upstream:\n  url: http://127.0.0.1:8081\n  response_timeout: 30s\n\
         moodle:\n  wwwroot: https://lms.example.edu\n  dataroot: {}\n\
         webservice:\n  rate_limits:\n    - key: token\n      rate: 60/min\n      burst: 10\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, text) = check_file(&path);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn check_names_an_unknown_key() {
    let (code, text) = check(|c, _| c["server"]["limits"]["max_header_sise"] = json!("8KiB"));
    assert_ne!(code, 0);
    assert!(text.contains("server.limits"), "{text}");
    assert!(text.contains("max_header_sise"), "{text}");
    let (code, text) = check(|c, _| c["upstreem"] = json!({}));
    assert_ne!(code, 0);
    assert!(text.contains("upstreem"), "{text}");
}

#[test]
fn check_names_a_bad_duration() {
    let (code, text) = check(|c, _| c["upstream"]["response_timeout"] = json!("30 seconds"));
    assert_ne!(code, 0);
    assert!(text.contains("upstream.response_timeout"), "{text}");
    let (code, text) = check(|c, _| c["server"]["limits"]["header_read_timeout"] = json!("10"));
    assert_ne!(code, 0);
    assert!(text.contains("server.limits.header_read_timeout"), "{text}");
}

#[test]
fn check_names_a_bad_rate() {
    let (code, text) = check(|c, _| {
        c["webservice"] = json!({ "rate_limits": [{ "key": "token", "rate": "10 per minute" }] });
    });
    assert_ne!(code, 0);
    assert!(text.contains("webservice.rate_limits[0].rate"), "{text}");
}

#[test]
fn check_names_a_bad_size() {
    let (code, text) = check(|c, _| c["server"]["limits"]["max_body_size"] = json!("10MB"));
    assert_ne!(code, 0);
    assert!(text.contains("server.limits.max_body_size"), "{text}");
}

#[test]
fn check_names_a_missing_cert_file() {
    let (code, text) = check(|c, dir: &Path| {
        let (_, key, _) = write_cert(dir, "a", &["a.test"]);
        c["server"]["listen"][0]["tls"] = json!({
            "certificates": [{ "cert_file": dir.join("missing.crt"), "key_file": key }],
        });
    });
    assert_ne!(code, 0);
    assert!(
        text.contains("server.listen[0].tls.certificates[0].cert_file"),
        "{text}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_nonzero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), "http://127.0.0.1:9");
    config["upstream"]["url"] = json!("ftp://lms");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.url"));
}

// ---------------------------------------------------------------------------------------------
// socket activation

#[test]
fn serves_on_a_socket_passed_by_systemd() {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-socket-activate"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "systemd-socket-activate is not installed: run scripts/install-test-deps.sh"
    );
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), &up.url());
    let addr: SocketAddr = config["server"]["listen"][0]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let listen = addr.to_string();
    let proxy = Proxy::spawn(dir, config, &["systemd-socket-activate", "-l", &listen]);
    // systemd-socket-activate holds the socket from the start; the proxy may start on the
    // first connection. If it tried to bind the address itself, that would fail (in use).
    let mut resp = None;
    wait_for(
        "an answer on the inherited socket",
        Duration::from_secs(15),
        || {
            resp = Raw::connect(addr).ok().and_then(|mut r| {
                r.send(b"GET /activated HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n")
                    .ok()?;
                r.read_response().ok()
            });
            resp.is_some()
        },
    );
    let resp = resp.unwrap();
    assert_eq!(resp.status, 200, "{}", proxy.output());
    assert_eq!(resp.json()["uri"], "/activated");
    assert!(
        proxy.stdout().contains("using sockets passed by systemd"),
        "{}",
        proxy.output()
    );
}

#[test]
fn sighup_says_that_log_level_and_format_need_a_restart() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    let mut config = proxy.config.clone();
    config["log"] = json!({ "level": "debug", "format": "text" });
    proxy.write_config(&config);
    proxy.signal("HUP");
    wait_for("the reload to be counted", Duration::from_secs(5), || {
        proxy.metric("moodle_edge_config_reloads_total{result=\"ok\"}") == Some(1.0)
    });
    wait_for("both restart-only warnings", Duration::from_secs(5), || {
        let out = proxy.output();
        out.contains("log.level changed") && out.contains("log.format changed")
    });
}

#[test]
fn readyz_fails_while_the_dataroot_is_unreadable() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    proxy.wait_ready();
    let dataroot = proxy.dir.path().join("moodledata");
    let moved = proxy.dir.path().join("moodledata.away");
    std::fs::rename(&dataroot, &moved).unwrap();
    let mut resp = None;
    wait_for("/readyz to fail", Duration::from_secs(10), || {
        resp = proxy.admin_get("/readyz").ok();
        resp.as_ref().is_some_and(|r| r.status == 503)
    });
    let v = resp.unwrap().json();
    let failing: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{v}");
    assert_eq!(failing[0]["name"], "dataroot", "{v}");
    assert_eq!(get(proxy.addr(), "/.moodle-edge/health", "").status, 503);
    // Back in place: ready again.
    std::fs::rename(&moved, &dataroot).unwrap();
    wait_for("/readyz to recover", Duration::from_secs(10), || {
        proxy.admin_get("/readyz").is_ok_and(|r| r.status == 200)
    });
}

#[test]
fn sd_notify_says_ready_and_pings_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = base_config(dir.path(), &up.url());
    let notify = format!("NOTIFY_SOCKET={}", socket_path.display());
    // systemd sets WATCHDOG_PID with WATCHDOG_USEC, and sd-notify pings only when the PID is
    // its own: `exec` keeps the shell's PID for the proxy.
    let proxy = Proxy::spawn(
        dir,
        config,
        &[
            "env",
            &notify,
            "WATCHDOG_USEC=400000",
            "sh",
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no READY and two WATCHDOG pings within 15s: {seen:?}\n{}",
            proxy.output()
        );
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        seen.iter().any(|m| m.contains("READY=1")),
        "no READY=1: {seen:?}"
    );
    // READY comes once the listeners are bound: the proxy serves by now.
    assert_eq!(get(proxy.addr(), "/after-ready", "").status, 200);
}
