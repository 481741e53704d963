//! The Offloader end to end: upstream parts in, client response out.

use super::config::{Mapping, SendfileConfig, SymlinkPolicy};
use super::*;
use http_body_util::BodyExt;

struct Site {
    dir: tempfile::TempDir,
    offloader: Offloader,
    metrics: Arc<SendfileMetrics>,
    data: Vec<u8>,
}

const HASH: &str = "08f5ab0000000000000000000000000000000000";

/// A moodledata with `filedir/08/f5/<hash>` (1000 bytes), mapped at `/dataroot/`, and the same
/// directory as an X-Sendfile root.
fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let filedir = dir.path().join("filedir/08/f5");
    std::fs::create_dir_all(&filedir).unwrap();
    std::fs::write(filedir.join(HASH), &data).unwrap();
    let cfg = SendfileConfig {
        mappings: vec![Mapping {
            prefix: "/dataroot/".into(),
            root: dir.path().to_path_buf(),
        }],
        sendfile_roots: vec![dir.path().to_path_buf()],
        symlinks: SymlinkPolicy::WithinRoot,
    };
    let metrics = Arc::new(SendfileMetrics::unregistered().unwrap());
    let offloader = Offloader::new(&cfg, metrics.clone());
    Site {
        dir,
        offloader,
        metrics,
        data,
    }
}

/// Moodle's answer: X-Accel-Redirect rawurlencoded as a whole, plus the headers it sets.
fn moodle_upstream(status: u16, extra: &[(&str, &str)]) -> http::response::Parts {
    let encoded = format!("%2Fdataroot%2Ffiledir%2F08%2Ff5%2F{HASH}");
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/pdf")
        .header("content-disposition", "inline; filename=\"a.pdf\"")
        .header("cache-control", "private, max-age=10")
        .header("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
        .header("pragma", "no-cache")
        .header("set-cookie", "MoodleSession=abc; path=/")
        .header("etag", format!("\"{HASH}\""))
        .header("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT")
        .header("accept-ranges", "bytes")
        .header("content-length", "0")
        .header("x-accel-redirect", encoded)
        .header("x-accel-buffering", "no");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn sendfile_upstream(path: &str) -> http::response::Parts {
    Response::builder()
        .header("content-type", "text/plain")
        .header("x-sendfile", path)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn req(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

async fn body_bytes(offload: Offload) -> (http::response::Parts, Vec<u8>) {
    let (parts, body) = offload.response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts, bytes)
}

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn serves_moodle_encoded_accel_redirect() {
    let s = site();
    let offload = s
        .offloader
        .respond(&Method::GET, &req(&[]), moodle_upstream(200, &[]))
        .await;
    assert!(offload.refusal.is_none());
    assert!(offload
        .file
        .as_ref()
        .unwrap()
        .ends_with(format!("filedir/08/f5/{HASH}")));
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, s.data);
    // Moodle's decisions survive.
    assert_eq!(header(&parts, "content-type"), Some("application/pdf"));
    assert_eq!(
        header(&parts, "content-disposition"),
        Some("inline; filename=\"a.pdf\"")
    );
    assert_eq!(header(&parts, "cache-control"), Some("private, max-age=10"));
    assert_eq!(header(&parts, "pragma"), Some("no-cache"));
    assert!(header(&parts, "expires").is_some());
    assert_eq!(
        header(&parts, "set-cookie"),
        Some("MoodleSession=abc; path=/")
    );
    // Its strong content-hash ETag is kept; Last-Modified is the file's.
    assert_eq!(header(&parts, "etag"), Some(format!("\"{HASH}\"").as_str()));
    assert_ne!(
        header(&parts, "last-modified"),
        Some("Mon, 01 Jan 2001 00:00:00 GMT")
    );
    // Body metadata is ours, once.
    assert_eq!(header(&parts, "content-length"), Some("1000"));
    assert_eq!(parts.headers.get_all("accept-ranges").iter().count(), 1);
    assert!(parts.headers.get("x-accel-redirect").is_none());
    assert!(parts.headers.get("x-accel-buffering").is_none());
    // Metrics: one 200, bytes counted, no stream left open.
    assert_eq!(
        s.metrics
            .responses
            .with_label_values(&["accel", "200"])
            .get(),
        1
    );
    assert_eq!(s.metrics.bytes_sent.get(), 1000);
    assert_eq!(s.metrics.active_streams.get(), 0);
}

#[tokio::test]
async fn unencoded_value_and_query_work_too() {
    let s = site();
    let value = format!("/dataroot/filedir/08/f5/{HASH}?forcedownload=1");
    let upstream = moodle_upstream(200, &[]);
    let mut upstream = upstream;
    upstream
        .headers
        .insert("x-accel-redirect", value.parse().unwrap());
    let (parts, body) =
        body_bytes(s.offloader.respond(&Method::GET, &req(&[]), upstream).await).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn weak_upstream_etag_is_replaced_by_the_files() {
    let s = site();
    let mut upstream = moodle_upstream(200, &[]);
    upstream.headers.insert("etag", "W/\"x\"".parse().unwrap());
    let (parts, _) = body_bytes(s.offloader.respond(&Method::GET, &req(&[]), upstream).await).await;
    let etag = header(&parts, "etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with("-3e8\""), "{etag}");
}

#[tokio::test]
async fn single_range() {
    let s = site();
    let offload = s
        .offloader
        .respond(
            &Method::GET,
            &req(&[("range", "bytes=10-19")]),
            moodle_upstream(200, &[]),
        )
        .await;
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&parts, "content-range"), Some("bytes 10-19/1000"));
    assert_eq!(header(&parts, "content-length"), Some("10"));
    assert_eq!(body, &s.data[10..20]);
}

#[tokio::test]
async fn multiple_ranges() {
    let s = site();
    let offload = s
        .offloader
        .respond(
            &Method::GET,
            &req(&[("range", "bytes=0-1,5-6")]),
            moodle_upstream(200, &[]),
        )
        .await;
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    let content_type = header(&parts, "content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    assert_eq!(
        header(&parts, "content-length").unwrap(),
        body.len().to_string()
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with(&format!("\r\n--{boundary}\r\nContent-Type: application/pdf\r\nContent-Range: bytes 0-1/1000\r\n\r\n")));
    assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
}

#[tokio::test]
async fn unsatisfiable_range() {
    let s = site();
    let offload = s
        .offloader
        .respond(
            &Method::GET,
            &req(&[("range", "bytes=5000-")]),
            moodle_upstream(200, &[]),
        )
        .await;
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&parts, "content-range"), Some("bytes */1000"));
    assert_eq!(header(&parts, "cache-control"), Some("no-store"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn garbage_range_gets_everything() {
    let s = site();
    let offload = s
        .offloader
        .respond(
            &Method::GET,
            &req(&[("range", "bytes=5-1")]),
            moodle_upstream(200, &[]),
        )
        .await;
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn if_range_mismatch_gets_everything() {
    let s = site();
    let request = req(&[("range", "bytes=0-9"), ("if-range", "\"other\"")]);
    let (parts, body) = body_bytes(
        s.offloader
            .respond(&Method::GET, &request, moodle_upstream(200, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body.len(), 1000);
    let request = req(&[("range", "bytes=0-9"), ("if-range", &format!("\"{HASH}\""))]);
    let (parts, _) = body_bytes(
        s.offloader
            .respond(&Method::GET, &request, moodle_upstream(200, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn not_modified_keeps_validators_and_caching() {
    let s = site();
    let request = req(&[("if-none-match", &format!("\"{HASH}\""))]);
    let (parts, body) = body_bytes(
        s.offloader
            .respond(&Method::GET, &request, moodle_upstream(200, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&parts, "etag"), Some(format!("\"{HASH}\"").as_str()));
    assert!(header(&parts, "last-modified").is_some());
    assert_eq!(header(&parts, "cache-control"), Some("private, max-age=10"));
    assert!(header(&parts, "expires").is_some());
    assert!(header(&parts, "content-type").is_none());
    assert!(header(&parts, "content-length").is_none());
}

#[tokio::test]
async fn failed_precondition() {
    let s = site();
    let request = req(&[("if-match", "\"other\"")]);
    let (parts, _) = body_bytes(
        s.offloader
            .respond(&Method::GET, &request, moodle_upstream(200, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        header(&parts, "set-cookie"),
        Some("MoodleSession=abc; path=/")
    );
}

#[tokio::test]
async fn head_has_length_but_no_body() {
    let s = site();
    let request = req(&[("range", "bytes=0-9")]);
    let (parts, body) = body_bytes(
        s.offloader
            .respond(&Method::HEAD, &request, moodle_upstream(200, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(header(&parts, "content-length"), Some("1000"));
    assert!(body.is_empty());
    assert_eq!(s.metrics.active_streams.get(), 0);
}

#[tokio::test]
async fn other_upstream_status_is_kept_without_ranges() {
    let s = site();
    let request = req(&[("range", "bytes=0-9")]);
    let (parts, body) = body_bytes(
        s.offloader
            .respond(&Method::GET, &request, moodle_upstream(404, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(body.len(), 1000);
    assert!(parts.headers.get("accept-ranges").is_none());
}

#[tokio::test]
async fn bodyless_upstream_status_passes_through() {
    let s = site();
    let (parts, body) = body_bytes(
        s.offloader
            .respond(&Method::GET, &req(&[]), moodle_upstream(304, &[]))
            .await,
    )
    .await;
    assert_eq!(parts.status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert!(parts.headers.get("x-accel-redirect").is_none());
}

#[tokio::test]
async fn x_sendfile() {
    let s = site();
    let inside = s.dir.path().join(format!("filedir/08/f5/{HASH}"));
    let offload = s
        .offloader
        .respond(
            &Method::GET,
            &req(&[]),
            sendfile_upstream(inside.to_str().unwrap()),
        )
        .await;
    let (parts, body) = body_bytes(offload).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, s.data);
    assert_eq!(
        s.metrics
            .responses
            .with_label_values(&["sendfile", "200"])
            .get(),
        1
    );
}

#[tokio::test]
async fn refusals_are_typed_and_counted() {
    let s = site();
    let root = s.dir.path().display().to_string();
    let cases: Vec<(http::response::Parts, &str, StatusCode)> = vec![
        (
            sendfile_upstream("/etc/passwd"),
            "outside_root",
            StatusCode::FORBIDDEN,
        ),
        (
            sendfile_upstream(&format!("{root}/../x")),
            "traversal",
            StatusCode::FORBIDDEN,
        ),
        (
            sendfile_upstream(&format!("{root}/missing")),
            "not_found",
            StatusCode::NOT_FOUND,
        ),
        (
            sendfile_upstream(&format!("{root}/filedir")),
            "not_regular",
            StatusCode::FORBIDDEN,
        ),
        (
            accel("%2Fdataroot%2F..%2F..%2Fetc%2Fpasswd"),
            "traversal",
            StatusCode::FORBIDDEN,
        ),
        (
            accel("/dataroot/a%00b"),
            "bad_encoding",
            StatusCode::FORBIDDEN,
        ),
        (accel("/elsewhere/x"), "no_mapping", StatusCode::NOT_FOUND),
        (
            accel("/dataroot/missing"),
            "not_found",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (upstream, label, status) in cases {
        let offload = s.offloader.respond(&Method::GET, &req(&[]), upstream).await;
        assert_eq!(offload.refusal, Some(label));
        assert!(offload.file.is_none());
        assert_eq!(offload.response.status(), status, "{label}");
        assert_eq!(
            offload.response.headers().get("cache-control").unwrap(),
            "no-store"
        );
        assert!(s.metrics.refusals.with_label_values(&[label]).get() >= 1);
    }
}

fn accel(value: &str) -> http::response::Parts {
    Response::builder()
        .header("x-accel-redirect", value)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn wants_offload_and_internal_paths() {
    assert!(Offloader::wants_offload(&req(&[(
        "x-accel-redirect",
        "/a"
    )])));
    assert!(Offloader::wants_offload(&req(&[("x-sendfile", "/a")])));
    assert!(!Offloader::wants_offload(&req(&[("content-type", "a/b")])));
    let s = site();
    assert!(s.offloader.is_internal_path("/dataroot/filedir/x"));
    assert!(s.offloader.is_internal_path("//dataroot/x"));
    assert!(s.offloader.is_internal_path("/./dataroot/x"));
    assert!(s.offloader.is_internal_path("/%64ataroot/x"));
    assert!(!s.offloader.is_internal_path("/pluginfile.php/1/x"));
}

#[test]
fn empty_prefix_is_ignored() {
    let cfg = SendfileConfig {
        mappings: vec![Mapping {
            prefix: "/".into(),
            root: "/tmp".into(),
        }],
        ..SendfileConfig::default()
    };
    let offloader = Offloader::new(&cfg, Arc::new(SendfileMetrics::unregistered().unwrap()));
    assert!(!offloader.is_internal_path("/index.php"));
}

#[test]
fn limit_rate_header() {
    assert_eq!(
        limit_rate(&req(&[("x-accel-limit-rate", "1024")])),
        Some(1024)
    );
    assert_eq!(limit_rate(&req(&[("x-accel-limit-rate", "0")])), None);
    assert_eq!(limit_rate(&req(&[("x-accel-limit-rate", "fast")])), None);
    assert_eq!(limit_rate(&req(&[])), None);
}

#[test]
fn hop_by_hop_headers_go() {
    let upstream = req(&[
        ("connection", "x-private, keep-alive"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("x-sendfile", "/a"),
        ("x-accel-limit-rate", "5"),
        ("vary", "Accept-Encoding"),
    ]);
    let kept = end_to_end_headers(&upstream);
    assert_eq!(kept.len(), 1);
    assert!(kept.contains_key("vary"));
}
