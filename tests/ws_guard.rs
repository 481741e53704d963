//! The web-service guard end to end: the real binary in front of a stand-in Moodle.
//!
//! Every test starts its own moodle-edge (YAML config in a temp dir, killed by PID on drop) and
//! its own stand-in. No test asserts a duration: where time must pass (a breaker's `open_for`,
//! a concurrency wait) the test polls with a deadline; the few sleeps only guarantee a lower
//! bound (a held probe that must count as slow).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod ws_common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ws_common::*;

const FAST: Duration = Duration::from_millis(20);

fn breaker(extra: Value) -> Value {
    let mut cfg = json!({
        "max_concurrent_per_token": 0,
        "circuit_breaker": {
            "window": "30s",
            "min_requests": 3,
            "error_rate": 0.5,
            "slow_call_duration": "200ms",
            "slow_call_rate": 0.5,
            // Long enough that a loaded machine cannot half-open the breaker between its
            // opening and the refusals a test checks; next_probe polls for the half-open.
            "open_for": "4s",
        },
    });
    if let (Some(c), Value::Object(e)) = (cfg.as_object_mut(), extra) {
        c.extend(e);
    }
    cfg
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

async fn breaker_state(edge: &Edge) -> f64 {
    edge.metric(&series(
        "moodle_edge_ws_breaker_state",
        &[("scope", "upstream")],
    ))
    .await
}

async fn transitions(edge: &Edge, to: &str) -> f64 {
    edge.metric(&series(
        "moodle_edge_ws_breaker_transitions_total",
        &[("scope", "upstream"), ("to", to)],
    ))
    .await
}

async fn calls(edge: &Edge, function: &str, outcome: &str) -> f64 {
    edge.metric(&series(
        "moodle_edge_ws_calls_total",
        &[("function", function), ("outcome", outcome)],
    ))
    .await
}

/// The edge's breaker answer: 503, Retry-After, Moodle JSON; the stand-in never saw it.
async fn assert_refused_by_breaker(edge: &Edge, moodle: &Moodle, token: &str, function: &str) {
    let before = moodle.count();
    let r = edge.call(token, function, true).await;
    r.assert_moodle_json(503, "serviceunavailable");
    assert!((1..=4).contains(&r.retry_after()), "open_for is 4s");
    assert_eq!(
        moodle.count(),
        before,
        "a refused call must not reach Moodle"
    );
}

/// Sends `function` calls until one reaches the stand-in (the half-open probe); every call
/// before it must be the breaker's 503. Returns the probe's task.
async fn next_probe(
    edge: &Edge,
    moodle: &Moodle,
    token: &str,
    function: &str,
) -> tokio::task::JoinHandle<Reply> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = moodle.count_fn(function);
    loop {
        let call = edge.spawn_call(token, function);
        loop {
            // The stand-in records a call before it answers: check it first.
            if moodle.count_fn(function) > before {
                return call;
            }
            if call.is_finished() {
                if moodle.count_fn(function) > before {
                    return call;
                }
                call.await
                    .unwrap()
                    .assert_moodle_json(503, "serviceunavailable");
                break;
            }
            assert!(Instant::now() < deadline, "no half-open probe within 10s");
            tokio::time::sleep(FAST).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_latency_alone_and_half_opens_to_one_probe() {
    let moodle = Moodle::start();
    moodle.on("local_report_slow", Act::Slow(Duration::from_millis(400)));
    let edge = Edge::start(&moodle.url(), breaker(json!({})), &[]).await;
    let t = token(1);

    // Three slow but successful calls: no error at all, and the breaker opens.
    for _ in 0..3 {
        let r = edge.call(&t, "local_report_slow", true).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ok"], true);
    }
    assert_eq!(calls(&edge, "local_report_slow", "ok").await, 3.0);
    let m = edge.metrics().await;
    for bad in ["transient", "upstream_error", "timeout"] {
        assert!(!m.contains(&format!("outcome=\"{bad}\"")), "{m}");
    }
    assert_eq!(breaker_state(&edge).await, 1.0);
    assert_eq!(transitions(&edge, "open").await, 1.0);

    // Open: answered at once by the edge, in the format asked for.
    assert_refused_by_breaker(&edge, &moodle, &t, "core_webservice_get_site_info").await;
    let before = moodle.count();
    let r = edge.call(&t, "core_webservice_get_site_info", false).await;
    r.assert_moodle_xml(503, "serviceunavailable");
    assert!(r.retry_after() >= 1);
    assert_eq!(moodle.count(), before);

    // Half-open: exactly one probe goes through; while it is out, the rest get 503.
    let gate = Gate::new();
    moodle.on("local_probe_held", Act::Hold(gate.clone()));
    let probe = next_probe(&edge, &moodle, &t, "local_probe_held").await;
    assert_eq!(breaker_state(&edge).await, 2.0);
    for _ in 0..3 {
        let r = edge.call(&t, "core_course_get_courses", true).await;
        r.assert_moodle_json(503, "serviceunavailable");
        assert_eq!(r.retry_after(), 1);
    }
    assert_eq!(moodle.count_fn("core_course_get_courses"), 0);
    assert_eq!(moodle.count_fn("local_probe_held"), 1);
    // Held past slow_call_duration: a slow probe is a failed probe, so the breaker re-opens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.open();
    assert_eq!(probe.await.unwrap().status, 200);
    assert_eq!(breaker_state(&edge).await, 1.0);
    assert_eq!(transitions(&edge, "open").await, 2.0);
    assert_refused_by_breaker(&edge, &moodle, &t, "core_course_get_courses").await;

    // The next probe answers fast: closed again, calls flow.
    let probe = next_probe(&edge, &moodle, &t, "core_webservice_get_site_info").await;
    assert_eq!(probe.await.unwrap().status, 200);
    assert_eq!(breaker_state(&edge).await, 0.0);
    let r = edge.call(&t, "core_course_get_courses", true).await;
    assert_eq!(r.status, 200);
    assert_eq!(moodle.count_fn("core_course_get_courses"), 1);
    assert_eq!(transitions(&edge, "half_open").await, 2.0);
    assert_eq!(transitions(&edge, "closed").await, 1.0);
    edge.assert_secrets_absent(&[&t]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_transient_errors_and_a_failed_probe_reopens_it() {
    let moodle = Moodle::start();
    moodle
        .on("core_user_create_users", dml_deadlock())
        .on("enrol_manual_enrol_users", Act::Status(503))
        .on("core_course_get_contents", Act::Close)
        .on("local_probe_500", Act::Status(500));
    let edge = Edge::start(&moodle.url(), breaker(json!({})), &[]).await;
    let t = token(2);

    // A deadlock (HTTP 200 + dml_write_exception), a 503 and a dropped connection.
    let r = edge.call(&t, "core_user_create_users", true).await;
    assert_eq!(r.status, 200, "Moodle's exception passes through");
    assert_eq!(r.json()["exception"], "dml_write_exception");
    let r = edge.call(&t, "enrol_manual_enrol_users", true).await;
    assert_eq!(r.status, 503);
    assert!(
        r.header("retry-after").is_none(),
        "Moodle's own 503 passes through"
    );
    let r = edge.call(&t, "core_course_get_contents", true).await;
    assert_eq!(r.status, 502);
    assert_eq!(breaker_state(&edge).await, 1.0);
    assert_eq!(
        calls(&edge, "core_user_create_users", "transient").await,
        1.0
    );
    assert_eq!(
        calls(&edge, "enrol_manual_enrol_users", "upstream_error").await,
        1.0
    );
    assert_eq!(
        calls(&edge, "core_course_get_contents", "upstream_error").await,
        1.0
    );
    assert_refused_by_breaker(&edge, &moodle, &t, "core_webservice_get_site_info").await;

    // The probe fails (500): open again at once.
    let probe = next_probe(&edge, &moodle, &t, "local_probe_500").await;
    assert_eq!(probe.await.unwrap().status, 500);
    assert_eq!(breaker_state(&edge).await, 1.0);
    assert_refused_by_breaker(&edge, &moodle, &t, "core_webservice_get_site_info").await;
    assert_eq!(transitions(&edge, "open").await, 2.0);

    // A good probe closes it.
    let probe = next_probe(&edge, &moodle, &t, "core_webservice_get_site_info").await;
    assert_eq!(probe.await.unwrap().status, 200);
    assert_eq!(breaker_state(&edge).await, 0.0);
    assert_eq!(transitions(&edge, "closed").await, 1.0);

    // The audit log read the exception from the JSON body; the refusals are there too.
    let audit = edge.audit_lines(5).await;
    let deadlock = audit
        .iter()
        .find(|l| l["function"] == "core_user_create_users")
        .expect("audit line for the deadlock");
    assert_eq!(deadlock["exception"], "dml_write_exception");
    assert_eq!(deadlock["errorcode"], "dmlwriteexception");
    assert_eq!(deadlock["outcome"], "transient");
    assert_eq!(deadlock["status"], 200);
    let closed = audit
        .iter()
        .find(|l| l["function"] == "core_course_get_contents")
        .unwrap();
    assert_eq!(closed["outcome"], "upstream_error");
    assert_eq!(closed["status"], 502);
    assert!(audit
        .iter()
        .any(|l| l["outcome"] == "rejected:breaker_open" && l["status"] == 503));
    edge.assert_secrets_absent(&[&t]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_auth_failures_and_business_errors_keep_it_closed() {
    let moodle = Moodle::start();
    moodle
        .on("core_user_get_users", invalid_parameter())
        .on("core_webservice_get_site_info", invalid_token())
        .on("core_user_create_users", no_capability())
        .on("core_user_update_users", business_error())
        .on("local_missing", Act::Status(404))
        .on_path(TOKEN_PHP, Act::TokenError("invalidlogin"));
    let edge = Edge::start(&moodle.url(), breaker(json!({})), &[]).await;
    let t = token(3);
    let rounds = 8;
    for _ in 0..rounds {
        assert_eq!(edge.call(&t, "core_user_get_users", true).await.status, 200);
        assert_eq!(
            edge.call(&t, "core_webservice_get_site_info", true)
                .await
                .status,
            200
        );
        // XML error body this time.
        let r = edge.call(&t, "core_user_create_users", false).await;
        assert!(r.text().contains("required_capability_exception"));
        assert_eq!(
            edge.call(&t, "core_user_update_users", true).await.status,
            200
        );
        assert_eq!(edge.call(&t, "local_missing", true).await.status, 404);
        let r = edge
            .post(
                TOKEN_PHP,
                "application/x-www-form-urlencoded",
                b"username=sis&password=Secret-Pa55&service=moodle_mobile_app".to_vec(),
            )
            .await;
        assert_eq!(r.json()["errorcode"], "invalidlogin");
    }
    assert_eq!(moodle.count(), 6 * rounds);
    assert_eq!(breaker_state(&edge).await, 0.0);
    assert_eq!(transitions(&edge, "open").await, 0.0);
    assert_eq!(
        edge.call(&t, "core_course_get_courses", true).await.status,
        200
    );

    let n = f64::from(rounds as u32);
    assert_eq!(calls(&edge, "core_user_get_users", "client_fault").await, n);
    assert_eq!(
        calls(&edge, "core_webservice_get_site_info", "auth_failure").await,
        n
    );
    assert_eq!(
        calls(&edge, "core_user_create_users", "auth_failure").await,
        n
    );
    assert_eq!(
        calls(&edge, "core_user_update_users", "business_error").await,
        n
    );
    assert_eq!(calls(&edge, "local_missing", "client_fault").await, n);
    assert_eq!(calls(&edge, "none", "auth_failure").await, n, "token.php");

    // Audit: one line per call with the fields an operator needs, read from JSON and XML.
    let audit = edge.audit_lines(6 * rounds + 1).await;
    let fp = fingerprint(&t);
    let line = |f: &str| -> Value {
        audit
            .iter()
            .find(|l| l["function"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("no audit line for {f}"))
    };
    let l = line("core_user_get_users");
    assert_eq!(l["token_fp"], fp.as_str());
    assert_eq!(l["token_fp"].as_str().unwrap().len(), 12);
    assert!(l["token_fp"]
        .as_str()
        .unwrap()
        .bytes()
        .all(|b| b.is_ascii_hexdigit()));
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert!(l["duration_ms"].is_u64());
    assert_eq!(l["status"], 200);
    assert_eq!(l["outcome"], "client_fault");
    assert_eq!(l["exception"], "invalid_parameter_exception");
    assert_eq!(l["errorcode"], "invalidparameter");
    assert_eq!(l["entry"], "rest");
    let l = line("core_webservice_get_site_info");
    assert_eq!(
        (l["exception"].as_str(), l["errorcode"].as_str()),
        (Some("webservice_access_exception"), Some("invalidtoken"))
    );
    let l = line("core_user_create_users");
    assert_eq!(l["exception"], "required_capability_exception", "from XML");
    assert_eq!(l["errorcode"], "nopermissions");
    assert_eq!(l["outcome"], "auth_failure");
    let l = line("core_user_update_users");
    assert_eq!(l["errorcode"], "usernamenotunique");
    assert_eq!(l["outcome"], "business_error");
    let l = audit.iter().find(|l| l["entry"] == "token").unwrap();
    assert_eq!(l["errorcode"], "invalidlogin");
    assert_eq!(l["outcome"], "auth_failure");
    assert!(l["token_fp"].is_null());
    edge.assert_secrets_absent(&[&t, "Secret-Pa55"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_in_the_callers_format() {
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "max_concurrent_per_token": 0,
            "rate_limits": [{ "key": "token", "rate": "1/min", "burst": 2 }],
        }),
        &[],
    )
    .await;
    let (a, b, c) = (token(4), token(5), token(6));
    for _ in 0..2 {
        assert_eq!(
            edge.call(&a, "core_course_get_courses", true).await.status,
            200
        );
        assert_eq!(
            edge.call(&b, "core_course_get_courses", false).await.status,
            200
        );
    }
    let r = edge.call(&a, "core_course_get_courses", true).await;
    r.assert_moodle_json(429, "toomanyrequests");
    let secs = r.retry_after();
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = edge.call(&b, "core_course_get_courses", false).await;
    r.assert_moodle_xml(429, "toomanyrequests");
    assert!((1..=60).contains(&r.retry_after()));
    // Another token has its own bucket.
    assert_eq!(
        edge.call(&c, "core_course_get_courses", true).await.status,
        200
    );
    assert_eq!(moodle.count(), 5, "refused calls never reach Moodle");
    assert_eq!(
        edge.metric(&series(
            "moodle_edge_ws_rate_limited_total",
            &[("limit", "token")]
        ))
        .await,
        2.0
    );
    let audit = edge.audit_lines(7).await;
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|l| l["outcome"] == "rejected:rate_limited")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|l| l["status"] == 429));
    assert!(refused
        .iter()
        .any(|l| l["token_fp"] == fingerprint(&a).as_str()));
    edge.assert_secrets_absent(&[&a, &b, &c]).await;

    // /login/token.php carries no token: an ip rule covers it, and it answers in its own shape.
    let issued = token(7);
    moodle.on_path(TOKEN_PHP, Act::Token(issued.clone()));
    let edge = Edge::start(
        &moodle.url(),
        json!({ "rate_limits": [{ "key": "ip", "rate": "1/min", "burst": 2 }] }),
        &[],
    )
    .await;
    let login = || {
        edge.post(
            TOKEN_PHP,
            "application/x-www-form-urlencoded",
            b"username=sis&password=Secret-Pa55&service=sis_sync".to_vec(),
        )
    };
    for _ in 0..2 {
        let r = login().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["token"], issued.as_str());
    }
    let r = login().await;
    assert_eq!(r.status, 429);
    assert!((1..=60).contains(&r.retry_after()));
    let v = r.json();
    assert_eq!(v["errorcode"], "toomanyrequests", "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(v.get("exception").is_none(), "token.php shape: {v}");
    assert_eq!(
        edge.metric(&series(
            "moodle_edge_ws_rate_limited_total",
            &[("limit", "ip")]
        ))
        .await,
        1.0
    );
    edge.assert_secrets_absent(&[&issued, "Secret-Pa55"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_reach_moodle_byte_for_byte_and_post_wins_over_get() {
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "max_concurrent_per_token": 0,
            "max_inspect_body": "64KiB",
            "rate_limits": [{ "key": "token", "rate": "600/min", "burst": 100 }],
        }),
        &[],
    )
    .await;
    let t = token(8);
    let fp = fingerprint(&t);

    // PHP bracket arrays, raw and percent-encoded; the body's wsfunction beats the query's.
    let form = format!(
        "wstoken={t}&wsfunction=core_user_create_users&moodlewsrestformat=json\
         &users[0][username]=ada&users[0][email]=ada%40example.edu&users[0][auth]=manual\
         &users%5B1%5D%5Busername%5D=grace&users%5B1%5D%5Bcustomfields%5D%5B0%5D%5Btype%5D=sisid\
         &users[1][firstname]=Gr%C3%A2ce+H.&users[1][password]=Pa%26ss%3Dw0rd"
    );
    let r = edge
        .post(
            &format!("{REST}?wsfunction=core_webservice_get_site_info"),
            "application/x-www-form-urlencoded",
            form.clone().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = moodle.received().pop().unwrap();
    assert_eq!(got.body, form.as_bytes());
    assert_eq!(got.sha256, sha256_hex(form.as_bytes()));
    assert_eq!(got.query, "wsfunction=core_webservice_get_site_info");
    assert_eq!(got.function.as_deref(), Some("core_user_create_users"));
    assert_eq!(
        got.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    // Multipart with a file part four times max_inspect_body: the fields before it are read,
    // the whole body still arrives unchanged.
    let file = blob(256 * 1024);
    let (ct, body) = multipart(&[
        ("wstoken", None, t.as_bytes()),
        ("wsfunction", None, b"core_files_upload"),
        ("moodlewsrestformat", None, b"json"),
        ("filecontent", Some("grades.csv"), &file),
        ("itemid", None, b"0"),
    ]);
    let r = edge.post(REST, &ct, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = moodle.received().pop().unwrap();
    assert_eq!(got.body.len(), body.len());
    assert_eq!(got.sha256, sha256_hex(&body));
    assert_eq!(got.header("content-type"), Some(ct.as_str()));

    // A big urlencoded form (beyond max_inspect_body), token first.
    let mut big = format!("wstoken={t}&wsfunction=enrol_manual_enrol_users");
    for i in 0..6000 {
        big.push_str(&format!(
            "&enrolments[{i}][roleid]=5&enrolments[{i}][userid]={}&enrolments[{i}][courseid]=42",
            1000 + i
        ));
    }
    assert!(big.len() > 2 * 64 * 1024);
    let r = edge
        .post(
            REST,
            "application/x-www-form-urlencoded",
            big.clone().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    let got = moodle.received().pop().unwrap();
    assert_eq!(got.sha256, sha256_hex(big.as_bytes()));

    // What the edge understood, from its audit log: function and token from the bodies.
    let audit = edge.audit_lines(3).await;
    // Each worker thread writes its own batches, so lines of calls on different connections
    // may come out of order: compare as a set.
    let mut functions: Vec<&str> = audit
        .iter()
        .filter_map(|l| l["function"].as_str())
        .collect();
    functions.sort_unstable();
    assert_eq!(
        functions,
        [
            "core_files_upload",
            "core_user_create_users",
            "enrol_manual_enrol_users"
        ]
    );
    assert!(audit.iter().all(|l| l["token_fp"] == fp.as_str()));
    assert_eq!(moodle.count(), 3);
    edge.assert_secrets_absent(&[&t]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_waits_then_429s() {
    let moodle = Moodle::start();
    let gate = Gate::new();
    moodle.on("local_long_export", Act::Hold(gate.clone()));
    let edge = Edge::start(
        &moodle.url(),
        json!({ "max_concurrent_per_token": 2, "concurrency_wait": "2s" }),
        &[],
    )
    .await;
    let (t, other) = (token(9), token(10));
    let first = edge.spawn_call(&t, "local_long_export");
    let second = edge.spawn_call(&t, "local_long_export");
    wait_for_async(
        "two calls held at the stand-in",
        Duration::from_secs(10),
        || moodle.count_fn("local_long_export") == 2,
    )
    .await;
    // The third waits concurrency_wait, then is refused; another token is not affected.
    let third = edge.spawn_call(&t, "local_long_export");
    let r = edge.call(&other, "core_course_get_courses", true).await;
    assert_eq!(r.status, 200);
    let r = third.await.unwrap();
    r.assert_moodle_json(429, "toomanyrequests");
    assert_eq!(r.retry_after(), 1);
    assert_eq!(moodle.count_fn("local_long_export"), 2);
    assert_eq!(
        edge.metric(&series(
            "moodle_edge_ws_concurrency_waits_total",
            &[("result", "rejected")]
        ))
        .await,
        1.0
    );
    // A fourth waits too, and gets the slot when a held call ends.
    let fourth = edge.spawn_call(&t, "local_long_export");
    // Lets the fourth reach its wait (not asserted: a late arrival would find a free slot).
    tokio::time::sleep(Duration::from_millis(400)).await;
    gate.open();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(fourth.await.unwrap().status, 200);
    assert_eq!(moodle.count_fn("local_long_export"), 3);
    assert_eq!(
        edge.metric(&series(
            "moodle_edge_ws_concurrency_waits_total",
            &[("result", "admitted")]
        ))
        .await,
        1.0
    );
    assert_eq!(edge.metric("moodle_edge_ws_inflight").await, 0.0);
    let audit = edge.audit_lines(5).await;
    assert!(audit
        .iter()
        .any(|l| l["outcome"] == "rejected:concurrency" && l["status"] == 429));
    edge.assert_secrets_absent(&[&t, &other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_policy_per_entry_point() {
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "extra_entry_points": ["/local/hub/webservice.php"],
            "max_inspect_body": "64KiB",
            "function_policy": [
                { "path": REST, "deny": ["core_user_delete_*", "tool_dataprivacy_*"] },
                { "path": "/local/hub/webservice.php", "allow": ["local_hub_*"] },
            ],
        }),
        &[],
    )
    .await;
    let t = token(11);
    const HUB: &str = "/local/hub/webservice.php";

    let r = edge.call(&t, "core_user_delete_users", true).await;
    r.assert_moodle_json(403, "accessexception");
    assert!(r.header("retry-after").is_none());
    // Moodle matches function names case-insensitively; so does the edge.
    edge.call(&t, "CORE_USER_Delete_Users", false)
        .await
        .assert_moodle_xml(403, "accessexception");
    edge.call(&t, "tool_dataprivacy_submit_request", true)
        .await
        .assert_moodle_json(403, "accessexception");
    // Denied in the POST body even though the query names an allowed function.
    edge.post(
        &format!("{REST}?wsfunction=core_user_get_users&moodlewsrestformat=json"),
        "application/x-www-form-urlencoded",
        format!("wstoken={t}&wsfunction=core_user_delete_users").into_bytes(),
    )
    .await
    .assert_moodle_json(403, "accessexception");
    assert_eq!(moodle.count(), 0);
    assert_eq!(edge.call(&t, "core_user_get_users", true).await.status, 200);

    // The extra entry point serves only its own functions.
    let r = edge
        .get(&format!(
            "{HUB}?wstoken={t}&wsfunction=local_hub_sync_courses"
        ))
        .await;
    assert_eq!(r.status, 200);
    edge.get(&format!(
        "{HUB}?wstoken={t}&wsfunction=core_user_get_users&moodlewsrestformat=json"
    ))
    .await
    .assert_moodle_json(403, "accessexception");
    edge.get(&format!("{HUB}?wstoken={t}"))
        .await
        .assert_moodle_xml(403, "accessexception");
    assert_eq!(moodle.count(), 2);

    // A function the edge cannot see (after a file part beyond max_inspect_body) is refused
    // where a policy applies, rather than guessed.
    let file = blob(200 * 1024);
    let (ct, body) = multipart(&[
        ("wstoken", None, t.as_bytes()),
        ("moodlewsrestformat", None, b"json"),
        ("file", Some("x.bin"), &file),
        ("wsfunction", None, b"core_user_delete_users"),
    ]);
    // (its moodlewsrestformat came before the file: the answer is JSON)
    edge.post(REST, &ct, body)
        .await
        .assert_moodle_json(403, "accessexception");
    assert_eq!(moodle.count(), 2);

    let refusals = |reason: &'static str| {
        let edge = &edge;
        async move {
            edge.metric(&series(
                "moodle_edge_ws_policy_refusals_total",
                &[("reason", reason)],
            ))
            .await
        }
    };
    assert_eq!(refusals("function_denied").await, 4.0);
    assert_eq!(refusals("function_not_allowed").await, 2.0);
    assert_eq!(refusals("uninspectable").await, 1.0);
    let audit = edge.audit_lines(9).await;
    assert_eq!(
        audit
            .iter()
            .filter(|l| l["outcome"] == "rejected:function_denied")
            .count(),
        4
    );
    edge.assert_secrets_absent(&[&t]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_networks_bind_a_token_to_its_networks() {
    let moodle = Moodle::start();
    let (local, remote, free) = (token(12), token(13), token(14));
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "token_networks": [
                { "token_file": "{DIR}/local.token", "networks": ["127.0.0.0/8"] },
                { "token_file": "{DIR}/remote.token", "networks": ["10.20.0.0/16", "192.0.2.0/24"] },
            ],
        }),
        &[
            ("local.token", &format!("{local}\n")),
            ("remote.token", &format!("{remote}\n")),
        ],
    )
    .await;
    assert_eq!(
        edge.call(&local, "core_user_get_users", true).await.status,
        200
    );
    assert_eq!(
        edge.call(&free, "core_user_get_users", true).await.status,
        200
    );
    edge.call(&remote, "core_user_get_users", true)
        .await
        .assert_moodle_json(403, "accessexception");
    // Moodle's lookup ignores case; the edge too.
    edge.call(&remote.to_ascii_uppercase(), "core_user_get_users", false)
        .await
        .assert_moodle_xml(403, "accessexception");
    assert_eq!(moodle.count(), 2);

    // POST wins over GET, as in Moodle: the token that counts is the body's.
    let r = edge
        .post(
            &format!("{REST}?wstoken={remote}&moodlewsrestformat=json"),
            "application/x-www-form-urlencoded",
            format!("wstoken={free}&wsfunction=core_user_get_users").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    edge.post(
        &format!("{REST}?wstoken={free}&moodlewsrestformat=json"),
        "application/x-www-form-urlencoded",
        format!("wstoken={remote}&wsfunction=core_user_get_users").into_bytes(),
    )
    .await
    .assert_moodle_json(403, "accessexception");
    assert_eq!(moodle.count(), 3);
    let audit = edge.audit_lines(6).await;
    let passed: Vec<&Value> = audit.iter().filter(|l| l["outcome"] == "ok").collect();
    assert_eq!(
        passed.last().unwrap()["token_fp"],
        fingerprint(&free).as_str()
    );
    assert_eq!(
        audit
            .iter()
            .filter(|l| l["outcome"] == "rejected:token_network"
                && l["token_fp"] == fingerprint(&remote).as_str())
            .count(),
        3
    );
    assert_eq!(
        edge.metric(&series(
            "moodle_edge_ws_policy_refusals_total",
            &[("reason", "token_network")]
        ))
        .await,
        3.0
    );
    edge.assert_secrets_absent(&[&local, &remote, &free]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_out_of_logs_and_metrics_when_things_fail() {
    // Nothing listens on the upstream port: every call fails to connect and is logged.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let edge = Edge::start(
        &url,
        json!({ "rate_limits": [{ "key": "token", "rate": "1/min", "burst": 2 }] }),
        &[],
    )
    .await;
    let t = token(15);
    for _ in 0..2 {
        let r = edge.call(&t, "core_webservice_get_site_info", true).await;
        assert_eq!(r.status, 502);
    }
    let r = edge
        .post(
            REST,
            "application/x-www-form-urlencoded",
            format!("wstoken={t}&wsfunction=x&moodlewsrestformat=json").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 429);
    // A token in a malformed request and in odd places.
    let r = edge
        .get(&format!("{REST}?ws%74oken={t}&wsfunction=%ZZ&token={t}"))
        .await;
    assert!(r.status >= 400);
    edge.audit_lines(4).await;
    wait_for_async("upstream failures logged", Duration::from_secs(10), || {
        edge.stdout().contains("upstream failed")
    })
    .await;
    assert!(!r.text().contains(&t));
    edge.assert_secrets_absent(&[&t]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_are_the_clients_time_not_moodles() {
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        breaker(json!({ "max_inspect_body": "1KiB" })),
        &[],
    )
    .await;
    let t = token(16);
    // Three calls whose bodies trickle in for at least 600 ms each (past the 1 KiB the guard
    // reads first); Moodle answers each at once. Before the fix they opened the breaker.
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            let head = format!("wstoken={t}&wsfunction=mod_assign_save_submission&text=");
            let chunks = (0..4).map(move |i| {
                let text = if i == 0 {
                    head.clone() + &"a".repeat(2000)
                } else {
                    "b".repeat(2000)
                };
                Ok::<_, std::io::Error>(bytes::Bytes::from(text))
            });
            let slow =
                futures_util::StreamExt::then(futures_util::stream::iter(chunks), |c| async {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    c
                });
            let request = edge
                .http
                .post(edge.url(REST))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(reqwest::Body::wrap_stream(slow));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for u in uploads {
        assert_eq!(u.await.unwrap(), 200);
    }
    let whole = format!("wstoken={t}&wsfunction=mod_assign_save_submission&text=").len() + 8000;
    assert!(moodle.received().iter().all(|r| r.body.len() == whole));
    assert_eq!(calls(&edge, "mod_assign_save_submission", "ok").await, 3.0);
    assert_eq!(breaker_state(&edge).await, 0.0);
    assert_eq!(
        edge.call(&t, "core_webservice_get_site_info", true)
            .await
            .status,
        200
    );
    edge.assert_secrets_absent(&[&t]).await;
}

/// A SIGHUP that leaves `webservice:` unchanged keeps the rate-limit buckets: a reload must not
/// hand every caller a fresh burst. Changing the section builds a new guard.
#[tokio::test]
async fn reload_keeps_rate_limit_state_when_the_section_is_unchanged() {
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "max_concurrent_per_token": 0,
            "rate_limits": [{ "key": "token", "rate": "1/h", "burst": 1 }],
        }),
        &[],
    )
    .await;
    let t = token(21);
    assert_eq!(
        edge.call(&t, "core_course_get_courses", true).await.status,
        200
    );
    assert_eq!(
        edge.call(&t, "core_course_get_courses", true).await.status,
        429
    );

    let reload = |edge: &Edge| {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(edge.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let config_path = edge.dir.path().join("config.yaml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    // Same webservice section, another public health path.
    let mut v: Value = serde_json::from_str(&original).unwrap();
    v["server"]["public_health_path"] = json!("/lb-health");
    std::fs::write(&config_path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    reload(&edge);
    wait_for_async("the first reload", Duration::from_secs(10), || {
        edge.stdout().matches("configuration reloaded").count() >= 1
    })
    .await;
    assert_eq!(
        edge.call(&t, "core_course_get_courses", true).await.status,
        429,
        "the bucket survived the reload"
    );

    // A changed section is a new guard with new buckets.
    v["webservice"]["rate_limits"][0]["burst"] = json!(2);
    std::fs::write(&config_path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    reload(&edge);
    wait_for_async("the second reload", Duration::from_secs(10), || {
        edge.stdout().matches("configuration reloaded").count() >= 2
    })
    .await;
    assert_eq!(
        edge.call(&t, "core_course_get_courses", true).await.status,
        200
    );
}

/// XML-RPC and SOAP name their function inside the XML body: the edge reads it there, so a
/// deny list protects those servers too, and the body still reaches Moodle byte for byte.
#[tokio::test]
async fn function_policy_reads_xmlrpc_and_soap_bodies() {
    const XMLRPC: &str = "/webservice/xmlrpc/server.php";
    const SOAP: &str = "/webservice/soap/server.php";
    let moodle = Moodle::start();
    let edge = Edge::start(
        &moodle.url(),
        json!({
            "function_policy": [
                { "path": XMLRPC, "deny": ["tool_dataprivacy_*"] },
                { "path": SOAP, "allow": ["core_course_*"] },
            ],
        }),
        &[],
    )
    .await;
    let t = token(31);
    let call = |name: &str| {
        format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{name}</methodName><params></params></methodCall>"
        )
        .into_bytes()
    };
    let r = edge
        .post(
            &format!("{XMLRPC}?wstoken={t}"),
            "text/xml",
            call("tool_dataprivacy_approve_data_request"),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        moodle.count(),
        0,
        "a denied XML-RPC call never reaches Moodle"
    );

    let allowed = call("core_course_get_courses");
    let r = edge
        .post(
            &format!("{XMLRPC}?wstoken={t}"),
            "text/xml",
            allowed.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = moodle.received();
    assert_eq!(
        seen.last().map(|s| sha256_hex(&s.body)),
        Some(sha256_hex(&allowed))
    );

    let envelope = |name: &str| {
        format!(
            "<?xml version=\"1.0\"?><SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:ns1=\"urn:moodle\"><SOAP-ENV:Body><ns1:{name}/></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        .into_bytes()
    };
    let r = edge
        .post(
            &format!("{SOAP}?wstoken={t}"),
            "text/xml",
            envelope("core_user_get_users"),
        )
        .await;
    assert_eq!(r.status, 403, "only core_course_* may be called over SOAP");
    let r = edge
        .post(
            &format!("{SOAP}?wstoken={t}"),
            "text/xml",
            envelope("core_course_get_courses"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(moodle.count(), 2);
}
