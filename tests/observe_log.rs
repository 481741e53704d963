//! The access log as an operator reads it: the real binary writing to a file or standard
//! output, read back after the requests (and after the process has exited).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::json;

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
