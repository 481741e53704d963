//! `moodle-edge check --online` against stand-ins: a passing site, then each line that can
//! fail (upstream down or broken, token refused, dataroot or an offload root unreadable by the
//! service user, a certificate that does not cover the site or has expired).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const GOOD_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A Moodle stand-in: a login page with a Moodle Docs link, and the REST server answering
/// core_webservice_get_site_info for GOOD_TOKEN and invalidtoken for any other.
fn moodle(mut s: TcpStream) {
    let head = String::from_utf8_lossy(&read_head(&mut s)).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = s.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body);
    let (ctype, answer) = if head.starts_with("GET /login/index.php") {
        (
            "text/html",
            r#"<html><body><form><input type="hidden" name="logintoken" value="x"></form>
<a href="https://docs.moodle.org/405/en/login/index">Moodle Docs for this page</a></body></html>"#
                .to_string(),
        )
    } else if head.starts_with("POST /webservice/rest/server.php")
        && body.contains(&format!("wstoken={GOOD_TOKEN}"))
    {
        (
            "application/json",
            json!({"sitename": "Stand-in", "release": "4.5.1+ (Build: 20250110)", "version": "2024100701"}).to_string(),
        )
    } else {
        (
            "application/json",
            json!({"exception": "moodle_exception", "errorcode": "invalidtoken", "message": "Invalid token - token not found"}).to_string(),
        )
    };
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn broken(mut s: TcpStream) {
    let _ = read_head(&mut s);
    let _ = s.write_all(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// A temp dir the unprivileged user can enter, with a Moodle-shaped dataroot in it.
fn site_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.path().join("moodledata/filedir")).unwrap();
    std::fs::create_dir_all(dir.path().join("moodledata/filedir/ab")).unwrap();
    dir
}

fn config(dir: &Path, upstream: &str) -> Value {
    let mut c = base_config(dir, upstream);
    c["moodle"]["wwwroot"] = json!("https://lms.test");
    c["sendfile"] = json!({ "mappings": [{ "prefix": "/moodledata-internal/", "root": dir.join("moodledata") }] });
    c
}

/// Runs `check --online` as an unprivileged user (nobody, when the tests run as root: root
/// reads every file, the service user does not); returns (exit code, output).
fn check_online(dir: &Path, config: &Value) -> (i32, String) {
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .args(["check", "--online", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn line<'a>(text: &'a str, what: &str) -> &'a str {
    text.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(what)))
        .unwrap_or_else(|| panic!("no line for {what} in:\n{text}"))
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// An sso section naming the token file (all it needs to validate), so the check can call
/// core_webservice_get_site_info with it.
fn with_token(c: &mut Value, token: &Path) {
    c["sso"] = json!({ "moodle_handoff": { "token_file": token, "mapping_field": "username" }, "providers": [] });
}

/// A self-signed certificate for `names`, valid from `from` to `until` (years), mode 0644.
fn cert(dir: &Path, stem: &str, names: &[&str], from: i32, until: i32) -> (PathBuf, PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let c = params.self_signed(&key).unwrap();
    let (cp, kp) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cp, c.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    for p in [&cp, &kp] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (cp, kp)
}

fn tls_listener(c: &mut Value, cert: &Path, key: &Path) {
    c["server"]["listen"].as_array_mut().unwrap().push(json!({
        "addr": format!("127.0.0.1:{}", free_port()),
        "tls": { "certificates": [{ "cert_file": cert, "key_file": key }] },
    }));
}

#[test]
fn a_passing_site() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let mut c = config(dir.path(), &up.url());
    with_token(&mut c, &token_file(dir.path(), GOOD_TOKEN));
    let (cp, kp) = cert(dir.path(), "site", &["lms.test"], 2020, 2099);
    tls_listener(&mut c, &cp, &kp);
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 0, "{text}");
    assert!(line(&text, "upstream").contains("Moodle 4.5"), "{text}");
    let info = line(&text, "moodle site info");
    assert!(info.starts_with("ok") && info.contains("4.5.1+"), "{text}");
    assert!(!text.contains(GOOD_TOKEN), "the token was printed:\n{text}");
    assert!(line(&text, "moodle.dataroot").starts_with("ok"), "{text}");
    assert!(
        line(&text, "sendfile.mappings[0].root").starts_with("ok"),
        "{text}"
    );
    assert!(
        line(&text, "server.listen[1].tls.certificates[0]").starts_with("ok"),
        "{text}"
    );
    assert!(line(&text, "tls names").starts_with("ok"), "{text}");
    assert!(text.contains("online checks passed"), "{text}");
    // Nothing about features that are not built yet.
    assert!(!text.to_lowercase().contains("mnet"), "{text}");
}

#[test]
fn an_upstream_that_does_not_answer_fails() {
    let dir = site_dir();
    let c = config(dir.path(), &format!("http://127.0.0.1:{}", free_port()));
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 1, "{text}");
    assert!(line(&text, "upstream").starts_with("FAIL"), "{text}");
    assert!(text.contains("1 required check(s) failed"), "{text}");
}

#[test]
fn an_upstream_that_answers_500_fails() {
    let up = RawUpstream::start(broken);
    let dir = site_dir();
    let (code, text) = check_online(dir.path(), &config(dir.path(), &up.url()));
    assert_eq!(code, 1, "{text}");
    let l = line(&text, "upstream");
    assert!(l.starts_with("FAIL") && l.contains("500"), "{text}");
}

#[test]
fn a_refused_token_fails() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let mut c = config(dir.path(), &up.url());
    with_token(
        &mut c,
        &token_file(dir.path(), "ffffffffffffffffffffffffffffffff"),
    );
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 1, "{text}");
    let l = line(&text, "moodle site info");
    assert!(
        l.starts_with("FAIL") && l.contains("invalidtoken"),
        "{text}"
    );
    assert!(!text.contains("ffffffffffffffff"), "{text}");
}

#[test]
fn a_dataroot_the_service_user_cannot_read_fails() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let data = dir.path().join("moodledata");
    // Owner-only: unreadable to the unprivileged user the check runs as (and to root's
    // owner-less view when not root: mode 000).
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o000)).unwrap();
    let c = config(dir.path(), &up.url());
    // The static check (as root) still passes: the directory exists.
    let (code, text) = check_online(dir.path(), &c);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, 1, "{text}");
    let l = line(&text, "moodle.dataroot");
    assert!(
        l.starts_with("FAIL") && l.contains("Permission denied"),
        "{text}"
    );
    assert!(
        line(&text, "sendfile.mappings[0].root").starts_with("FAIL"),
        "{text}"
    );
}

#[test]
fn an_offload_root_the_service_user_cannot_enter_fails() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    // Listable but not searchable: names can be read, files cannot be opened.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o744)).unwrap();
    let mut c = config(dir.path(), &up.url());
    c["sendfile"]["mappings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "prefix": "/other-internal/", "root": other }));
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 1, "{text}");
    assert!(line(&text, "moodle.dataroot").starts_with("ok"), "{text}");
    let l = line(&text, "sendfile.mappings[1].root");
    assert!(l.starts_with("FAIL") && l.contains("not entered"), "{text}");
}

#[test]
fn a_certificate_that_does_not_cover_the_site_fails() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let mut c = config(dir.path(), &up.url());
    let (cp, kp) = cert(dir.path(), "other", &["other.test"], 2020, 2099);
    tls_listener(&mut c, &cp, &kp);
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 1, "{text}");
    let l = line(&text, "tls names");
    assert!(l.starts_with("FAIL") && l.contains("lms.test"), "{text}");
}

#[test]
fn an_expired_certificate_fails() {
    let up = RawUpstream::start(moodle);
    let dir = site_dir();
    let mut c = config(dir.path(), &up.url());
    let (cp, kp) = cert(dir.path(), "old", &["lms.test"], 2020, 2021);
    tls_listener(&mut c, &cp, &kp);
    let (code, text) = check_online(dir.path(), &c);
    assert_eq!(code, 1, "{text}");
    let l = line(&text, "server.listen[1].tls.certificates[0]");
    assert!(l.starts_with("FAIL") && l.contains("expired"), "{text}");
}
