//! What an operator meets at start-up and stop: socket activation that agrees with the config
//! (or says why not), logs fit for a file or the journal, the SIGTERM drain's last line, the
//! demo's clean failure, the shipped example config, and docs that link inside the repo.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `systemd-socket-activate -l A -l B ... moodle-edge run`: starts on the first connection to A.
fn activated(config: Value, sockets: &[SocketAddr]) -> EdgeProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut prefix = vec!["systemd-socket-activate".to_string()];
    for s in sockets {
        prefix.push("-l".into());
        prefix.push(s.to_string());
    }
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let text = serde_json::to_string_pretty(&config).unwrap();
    EdgeProcess::spawn(dir, BIN, &text, &prefix)
}

/// Connects until something accepts (systemd-socket-activate holds the socket from its start).
fn poke(addr: SocketAddr) {
    wait_for("the activation socket", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
}

fn listen_addr(config: &Value, i: usize) -> SocketAddr {
    config["server"]["listen"][i]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn an_inherited_socket_that_no_listener_names_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9");
    let wanted = listen_addr(&config, 0);
    let stray: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut proxy = activated(config, &[wanted, stray]);
    poke(wanted);
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert!(!status.success(), "{}", proxy.output());
    let err = proxy.stderr();
    assert!(err.contains(&stray.to_string()), "{}", proxy.output());
    assert!(err.contains("ListenStream="), "{}", proxy.output());
}

#[test]
fn a_listener_without_an_inherited_socket_is_bound_and_logged() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &up.url());
    let second = format!("127.0.0.1:{}", free_port());
    config["server"]["listen"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "addr": second }));
    let first = listen_addr(&config, 0);
    let mut proxy = activated(config, &[first]);
    poke(first);
    proxy.wait_listening(std::slice::from_ref(&second), Duration::from_secs(15));
    let resp = get(second.parse().unwrap(), "/bound-here", "");
    assert_eq!(resp.status, 200, "{}", proxy.output());
    let line = proxy
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "systemd passed no socket for this address; bound it here");
    let line = line.unwrap_or_else(|| panic!("no log line for {second}\n{}", proxy.output()));
    assert_eq!(line["addr"], second.as_str());
    proxy.terminate(Duration::from_secs(5));
}

/// Runs `moodle-edge run` with stdout into a file (not a terminal) and NO_COLOR unset, as a
/// unit whose output goes to a file or the journal.
fn run_plain(config: &Value, dir: &Path) -> std::process::Child {
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("NO_COLOR")
        .env_remove("MOODLE_EDGE_LOG")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_stdout(dir: &Path, what: &str) -> String {
    let mut text = String::new();
    wait_for(what, Duration::from_secs(15), || {
        text = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
        text.contains(what)
    });
    text
}

#[test]
fn text_logs_carry_no_colour_codes_when_not_written_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), "http://127.0.0.1:9");
    config["log"] = json!({ "format": "text" });
    let mut child = run_plain(&config, dir.path());
    let text = wait_stdout(dir.path(), "listening");
    process::terminate(&mut child, Duration::from_secs(5));
    assert!(!text.contains('\u{1b}'), "ANSI escape in: {text:?}");
}

#[test]
fn the_event_log_names_its_time_field_time_and_sigterm_ends_with_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9");
    let mut child = run_plain(&config, dir.path());
    wait_stdout(dir.path(), "listening");
    process::terminate(&mut child, Duration::from_secs(10));
    let text = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for v in &lines {
        assert!(v.get("timestamp").is_none(), "{v}");
        let time = v["time"].as_str().unwrap_or_else(|| panic!("no time: {v}"));
        assert!(time.ends_with('Z'), "{v}");
    }
    let last = lines.last().unwrap();
    assert_eq!(last["message"], "stopped", "{text}");
    assert_eq!(last["cut"], 0, "{text}");
    assert!(last.get("drained").is_some(), "{text}");
}

#[test]
fn a_demo_that_cannot_bind_names_its_flag_and_leaves_no_moodledata() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--listen", &addr.to_string(), "--admin"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("TMPDIR", tmp.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--listen"), "{err}");
    assert!(!err.contains("server.listen"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_example_config_passes_check_as_shipped() {
    let out = Command::new(BIN)
        .args(["check", "--config", "config.example.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every relative link in the README and docs/ names a file inside the repository that exists.
#[test]
fn docs_link_only_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        files.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    let mut bad = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains("../shared") {
            bad.push(format!("{}: mentions ../shared", file.display()));
        }
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let target = target.split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(target);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(root.canonicalize().unwrap()) => {}
                _ => bad.push(format!("{}: link to {target}", file.display())),
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
