//! Entry points for the cargo-fuzz targets (fuzz/) and their replay on stable
//! (tests/fuzz_replay.rs). Each takes raw bytes, runs one internal parser on them, and panics
//! only when the parser broke a promise (a length beyond its input, a range beyond the file);
//! errors are fine. Not an API: the parsers stay crate-private behind these wrappers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use crate::proxy::upstream::direct::{chunked, parse_response_head, NameCache};
use crate::sendfile::{conditional, path, range};
use crate::server::{h2_flood, head_scan};
use crate::webservice::{entry::EntryKind, params};

/// The names of the targets, as fuzz/fuzz_targets/NAME.rs and the corpus folders spell them.
pub const TARGETS: &[&str] = &[
    "response_head",
    "chunk_framing",
    "range_conditional",
    "webservice_params",
    "offload_path",
    "config_yaml",
    "request_head_scan",
];

/// Runs the target `name` on `data`; false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "response_head" => response_head(data),
        "chunk_framing" => chunk_framing(data),
        "range_conditional" => range_conditional(data),
        "webservice_params" => webservice_params(data),
        "offload_path" => offload_path(data),
        "config_yaml" => config_yaml(data),
        "request_head_scan" => request_head_scan(data),
        _ => return false,
    }
    true
}

/// The direct path's response head parser, fed whole and then with a warm name cache (the
/// cache must never change what a head means).
pub fn response_head(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let is_head = data.first().is_some_and(|b| b & 1 == 1);
    let mut names = NameCache::default();
    let first = parse_response_head(&buf, is_head, &mut names);
    if let Ok(Some((_, len, _))) = &first {
        assert!(*len <= data.len(), "head length beyond the input");
    }
    let again = parse_response_head(&buf, is_head, &mut names);
    let summary = |r: &Result<Option<(http::response::Parts, usize, bool)>, _>| match r {
        Ok(Some((p, len, keep))) => Some((p.status, p.headers.clone(), *len, *keep)),
        _ => None,
    };
    assert_eq!(
        summary(&first),
        summary(&again),
        "a warm name cache changed the head"
    );
}

/// Chunk-size lines and trailer lines as the direct path checks them.
pub fn chunk_framing(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Ok(size) = chunked::parse_chunk_size(line) {
            assert!(size < 1 << 60, "a 15-hex-digit size cannot exceed 2^60");
            assert!(!line.iter().any(|&b| b == b'\r' || b == b'\n'));
        }
        let _ = chunked::valid_trailer_line(line);
    }
}

/// Range, If-Range and the conditional headers against a file of a length taken from the
/// input: line 1 is Range, line 2 If-Range, the rest conditional header values in turn.
pub fn range_conditional(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let len = u64::from(data.len() as u32 % 5000);
    if let Some(range_header) = lines.next() {
        match range::evaluate(range_header, len) {
            range::RangeOutcome::Single(r) => check_range(&r, len),
            range::RangeOutcome::Multi(rs) => rs.iter().for_each(|r| check_range(r, len)),
            _ => {}
        }
    }
    let v = conditional::Validators {
        etag: "\"abc\"",
        last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
    };
    if let Some(if_range) = lines.next() {
        let _ = conditional::if_range_allows(if_range, v);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    ]
    .into_iter()
    .zip(lines)
    {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    for method in [Method::GET, Method::HEAD, Method::POST] {
        let _ = conditional::evaluate(&method, &headers, v);
    }
}

fn check_range(r: &range::ByteRange, len: u64) {
    // `end` is exclusive.
    assert!(
        r.start < r.end && r.end <= len,
        "range {r:?} outside a file of {len}"
    );
    let _ = r.content_range(len);
}

/// Web-service parameter extraction: the query, and the body as urlencoded, multipart (the
/// first line of the input is the boundary) and an XML-RPC/SOAP call, whole and cut.
pub fn webservice_params(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let q = params::query_params(&query);
    let _ = params::merge(EntryKind::Rest, &q, None);
    let _ = params::xml_call_function(data);
    let (boundary, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::from("b"), data),
    };
    let body = Bytes::copy_from_slice(body);
    let content_types = [
        "application/x-www-form-urlencoded".to_string(),
        format!("multipart/form-data; boundary={boundary}"),
    ];
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        for ended in [true, false] {
            for ct in &content_types {
                let found =
                    params::scan_call_body(EntryKind::Rest, Some(ct.as_str()), &body, ended).await;
                let _ = params::merge(EntryKind::Rest, &q, Some(&found));
            }
            for entry in [EntryKind::XmlRpc, EntryKind::Soap] {
                let _ = params::scan_call_body(entry, None, &body, ended).await;
            }
        }
    });
}

/// X-Accel-Redirect and X-Sendfile values: decoding and segmenting; no `..` or empty
/// segment may survive.
pub fn offload_path(data: &[u8]) {
    let decoded = [
        path::accel_uri_segments(data),
        path::sendfile_path_segments(data),
    ];
    for segments in decoded.iter().flatten() {
        for s in segments {
            assert!(
                s.as_slice() != b".." && s.as_slice() != b"." && !s.is_empty(),
                "segment {s:?} survived"
            );
        }
    }
    let _ = path::percent_decode_strict(data);
    let _ = path::config_segments(data);
}

/// The YAML config loader: any text gets a config or an error naming a key, never a panic.
pub fn config_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text);
    }
}

/// The listener's raw-head scan (CL+TE) and HTTP/2 frame budget over the same bytes, in
/// pieces of two sizes: the verdicts must not depend on how the bytes were split.
pub fn request_head_scan(data: &[u8]) {
    let step = usize::from(data.first().copied().unwrap_or(1).max(1));
    let whole = head_scan::fuzz_conflict(data, data.len().max(1));
    assert_eq!(
        whole,
        head_scan::fuzz_conflict(data, step),
        "split changed the verdict"
    );
    let a = h2_flood::fuzz_verdict(data, data.len().max(1));
    assert_eq!(
        a,
        h2_flood::fuzz_verdict(data, step),
        "split changed the verdict"
    );
}
