//! The access log as an operator reads it: the real binary writing to a file or standard
//! output, read back after the requests (and after the process has exited).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{json, Value};

/// Seconds since the epoch of a combined-format time, `[01/Dec/2026:21:40:53 +0000]`.
fn clf_seconds(line: &str) -> u64 {
    let start = line.find('[').expect("a [time]") + 1;
    let end = line[start..].find(']').expect("a [time]") + start;
    let text = &line[start..end];
    let (date_time, zone) = text.split_once(' ').expect("a zone");
    assert_eq!(zone, "+0000", "{line}");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = date_time.split(['/', ':']).collect();
    assert_eq!(parts.len(), 6, "{line}");
    let month = months.iter().position(|m| *m == parts[1]).expect("a month") + 1;
    let rfc3339 = format!(
        "{}-{month:02}-{}T{}:{}:{}Z",
        parts[2], parts[0], parts[3], parts[4], parts[5]
    );
    humantime::parse_rfc3339(&rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn access_log_time_is_when_the_request_was_served() {
    let up = Upstream::start();
    // JSON on standard output, combined in a file: both formats, both targets.
    let json_proxy = Proxy::start(&up.url(), |_, _| {});
    let combined_proxy = Proxy::start(&up.url(), |c, dir| {
        c["log"] = json!({ "access": {
            "format": "combined", "target": "file", "path": dir.join("access.log"),
        } });
    });
    let before = now_secs();
    assert_eq!(get(json_proxy.addr(), "/timed-json", "").status, 200);
    assert_eq!(
        get(combined_proxy.addr(), "/timed-combined", "").status,
        200
    );

    let line = json_proxy.access_line_for("/timed-json");
    let text = line["time"].as_str().expect("a time string");
    let time = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut combined = String::new();
    wait_for(
        "a combined line in the file",
        Duration::from_secs(10),
        || {
            combined = combined_proxy
                .read("access.log")
                .lines()
                .find(|l| l.contains("/timed-combined"))
                .unwrap_or_default()
                .to_string();
            !combined.is_empty()
        },
    );
    let after = now_secs();
    // The wall clock at the request, to the second (not the epoch, not some other day).
    assert!(
        (before..=after).contains(&secs),
        "{text} not within [{before}, {after}]"
    );
    let clf = clf_seconds(&combined);
    assert!(
        (before..=after).contains(&clf),
        "{combined} not within [{before}, {after}]"
    );
}

/// The JSON lines of `text` that are access-log lines (the event log shares standard output).
fn access_lines_in(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("status").is_some() && v.get("target").is_some())
        .collect()
}

/// `count` requests on one keep-alive connection, each answered, targets `/{prefix}/{i}`.
fn requests(addr: std::net::SocketAddr, prefix: &str, count: usize) {
    let mut raw = Raw::connect(addr).unwrap();
    for i in 0..count {
        raw.send(format!("GET /{prefix}/{i} HTTP/1.1\r\nHost: lms.test\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(raw.read_response().unwrap().status, 200);
    }
}

fn targets_with(lines: &[Value], prefix: &str) -> usize {
    lines
        .iter()
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("/{prefix}/")))
        })
        .count()
}

#[test]
fn lines_of_requests_just_before_sigterm_are_in_the_log_after_exit() {
    let up = Upstream::start();
    // Standard output (as journald reads it) and a file, both buffered.
    let mut on_stdout = Proxy::start(&up.url(), |_, _| {});
    let mut in_file = Proxy::start(&up.url(), |c, dir| {
        c["log"] = json!({ "access": { "target": "file", "path": dir.join("access.log") } });
    });
    const COUNT: usize = 300;
    requests(on_stdout.addr(), "last", COUNT);
    requests(in_file.addr(), "last", COUNT);
    // At once: no time for the writer's timer to have written them.
    on_stdout.signal("TERM");
    in_file.signal("TERM");
    assert!(on_stdout.wait_exit(Duration::from_secs(15)).success());
    assert!(in_file.wait_exit(Duration::from_secs(15)).success());
    let from_stdout = access_lines_in(&on_stdout.stdout());
    assert_eq!(
        targets_with(&from_stdout, "last"),
        COUNT,
        "{}",
        on_stdout.output()
    );
    let from_file = access_lines_in(&in_file.read("access.log"));
    assert_eq!(
        targets_with(&from_file, "last"),
        COUNT,
        "{}",
        in_file.output()
    );
}

#[test]
fn no_line_is_lost_across_a_reload() {
    let up = Upstream::start();
    let mut proxy = Proxy::start(&up.url(), |c, dir| {
        c["log"] = json!({ "access": { "target": "file", "path": dir.join("access.log") } });
    });
    const COUNT: usize = 100;
    requests(proxy.addr(), "before", COUNT);
    // The reload opens the log again (a rotated file is let go this way) and the old sink
    // writes what it held.
    let mut config = proxy.config.clone();
    config["server"]["public_health_path"] = json!("/lb-health");
    proxy.write_config(&config);
    proxy.signal("HUP");
    wait_for("the reload", Duration::from_secs(10), || {
        proxy.metric("moodle_edge_config_reloads_total{result=\"ok\"}") == Some(1.0)
    });
    requests(proxy.addr(), "after", COUNT);
    // Both sinks' lines are written within a second, the process still running.
    wait_for("every line in the file", Duration::from_secs(10), || {
        let lines = access_lines_in(&proxy.read("access.log"));
        targets_with(&lines, "before") == COUNT && targets_with(&lines, "after") == COUNT
    });
    assert_eq!(proxy.metric("moodle_edge_log_lines_dropped"), Some(0.0));
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(15)).success());
    let lines = access_lines_in(&proxy.read("access.log"));
    assert_eq!(targets_with(&lines, "before"), COUNT);
    assert_eq!(targets_with(&lines, "after"), COUNT);
}

#[test]
fn hostile_request_bytes_stay_inside_their_json_field() {
    let up = Upstream::start();
    let proxy = Proxy::start(&up.url(), |_, _| {});
    // Quotes, backslashes, a tab and bytes that are not UTF-8 (HTTP allows them as obs-text),
    // shaped to close the string and add a field; a path with a quote and a backslash.
    let mut request = b"GET /hostile/a\"b\\c HTTP/1.1\r\nHost: lms.test\r\n".to_vec();
    request.extend_from_slice(b"User-Agent: x\"\\\t\xff\xfe\x80\",\"status\":999,\"u\":\"\r\n");
    request.extend_from_slice(b"Referer: http://lms.test/\"\\\xc3(?sesskey=S3CRETref\r\n");
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    assert_eq!(roundtrip(proxy.addr(), &request).status, 200);
    let line = proxy.access_line_for("/hostile/");
    assert_eq!(line["target"], "/hostile/a\"b\\c");
    assert_eq!(line["status"], 200, "no field injected: {line}");
    assert!(line.get("u").is_none(), "no field injected: {line}");
    assert_eq!(
        line["user_agent"],
        "x\"\\\t\u{fffd}\u{fffd}\u{fffd}\",\"status\":999,\"u\":\""
    );
    assert_eq!(
        line["referer"],
        "http://lms.test/\"\\\u{fffd}(?sesskey=[redacted]"
    );
    assert!(!proxy.output().contains("S3CRETref"));
    // Every line of standard output is still one JSON document.
    for l in proxy.stdout().lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
}
