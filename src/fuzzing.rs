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
    "mnet_envelope",
    "mnet_xmlrpc",
    "saml_response_shape",
    "saml_redirect",
    "saml_metadata",
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
        "mnet_envelope" => mnet_envelope(data),
        "mnet_xmlrpc" => mnet_xmlrpc(data),
        "saml_response_shape" => saml_response_shape(data),
        "saml_redirect" => saml_redirect(data),
        "saml_metadata" => saml_metadata(data),
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

/// The limits the MNet targets read under: small enough that a fuzzer stays fast.
fn mnet_limits() -> crate::mnet::xml::XmlLimits {
    crate::mnet::xml::XmlLimits {
        max_bytes: 64 * 1024,
        max_depth: 32,
        max_nodes: 10_000,
    }
}

/// MNet's two envelopes (`signedMessage`, `encryptedMessage`) as the gateway reads a body:
/// whatever is accepted must read back the same after the gateway writes it again.
pub fn mnet_envelope(data: &[u8]) {
    use crate::mnet::envelope;
    let limits = mnet_limits();
    let text = crate::mnet::xml::decode(data);
    let _ = envelope::kind(&text);
    if let Ok(m) = envelope::parse_encrypted(&text, &limits) {
        let again = envelope::write_encrypted(&m.data, &m.wrapped_key, &m.wwwroot);
        let back = envelope::parse_encrypted(&again, &limits);
        assert_eq!(
            back.as_ref().ok(),
            Some(&m),
            "encryptedMessage changed on rewrite"
        );
    }
    if let Ok(m) = envelope::parse_signed(&text, &limits) {
        let again = envelope::write_signed(&m.payload, &m.signature, &m.wwwroot, m.timestamp);
        let back = envelope::parse_signed(&again, &limits);
        assert_eq!(
            back.as_ref().ok(),
            Some(&m),
            "signedMessage changed on rewrite"
        );
    }
}

/// XML-RPC `methodCall` and `methodResponse` (values of every type, faults): whatever is
/// accepted must read back equal after writing (what the gateway writes, a peer reads).
pub fn mnet_xmlrpc(data: &[u8]) {
    use crate::mnet::xmlrpc;
    let limits = mnet_limits();
    let text = crate::mnet::xml::decode(data);
    if let Ok(call) = xmlrpc::parse_call(&text, &limits) {
        let back = xmlrpc::parse_call(&xmlrpc::write_call(&call), &limits);
        match back {
            Ok(back) => {
                assert_eq!(back.method, call.method, "method name changed on rewrite");
                assert!(
                    same_values(&back.params, &call.params),
                    "params changed on rewrite: {:?} -> {:?}",
                    call.params,
                    back.params
                );
            }
            Err(e) => panic!("a call read does not read back after writing: {e}"),
        }
    }
    if let Ok(resp) = xmlrpc::parse_response(&text, &limits) {
        let back = xmlrpc::parse_response(&xmlrpc::write_response(&resp), &limits);
        let same = match (&resp, &back) {
            (xmlrpc::MethodResponse::Value(a), Ok(xmlrpc::MethodResponse::Value(b))) => {
                same_value(a, b)
            }
            (a, Ok(b)) => a == b,
            _ => false,
        };
        assert!(same, "response changed on rewrite: {resp:?} -> {back:?}");
    }
}

fn same_values(a: &[crate::mnet::xmlrpc::Value], b: &[crate::mnet::xmlrpc::Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
}

/// Value equality where a NaN equals itself (it reads back as NaN).
fn same_value(a: &crate::mnet::xmlrpc::Value, b: &crate::mnet::xmlrpc::Value) -> bool {
    use crate::mnet::xmlrpc::Value;
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => same_values(x, y),
        (Value::Struct(x), Value::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && same_value(v1, v2))
        }
        (x, y) => x == y,
    }
}

/// The SAML Response shape check (signature wrapping defence), run before any signature is
/// checked: anything gets a verdict, never a panic. What it accepts must hold exactly one
/// element named `Assertion` or `EncryptedAssertion` by local name, in any namespace (what a
/// reader matching local names would take), as a child of the root, and no `ID` twice.
pub fn saml_response_shape(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if crate::sso::saml::response_shape::check(text).is_err() {
        return;
    }
    let opt = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..roxmltree::ParsingOptions::default()
    };
    let Ok(doc) = roxmltree::Document::parse_with_options(text, opt) else {
        panic!("an accepted Response is not well formed");
    };
    let assertions: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.is_element() && matches!(n.tag_name().name(), "Assertion" | "EncryptedAssertion")
        })
        .collect();
    assert_eq!(
        assertions.len(),
        1,
        "an accepted Response holds other assertions"
    );
    assert_eq!(
        assertions[0].parent_element(),
        Some(doc.root_element()),
        "the accepted assertion is not the root's child"
    );
    let mut ids = std::collections::HashSet::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        if let Some(id) = n.attribute("ID") {
            assert!(ids.insert(id), "an accepted Response repeats the ID {id:?}");
        }
    }
}

/// The HTTP-Redirect binding and the logout messages it carries. A first byte below 128 takes
/// the rest as a raw query string (both message kinds); otherwise the rest is XML: sent through
/// the binding and received back unchanged, read as a LogoutRequest and LogoutResponse, and an
/// answer built to what was read must be read back naming the same request.
pub fn saml_redirect(data: &[u8]) {
    use crate::sso::saml::{logout_message, redirect_binding as rb};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode < 128 {
        for kind in [rb::Kind::Request, rb::Kind::Response] {
            if let Ok(got) = rb::receive(&text, kind) {
                let _ = got.is_signed();
                let _ = logout_message::read_request(&got.xml);
                let _ = logout_message::read_response(&got.xml);
            }
        }
        return;
    }
    let (relay, xml) = match text.split_once('\n') {
        Some((r, x)) if mode & 1 == 1 => (Some(r), x),
        _ => (None, text.as_ref()),
    };
    if let Ok(query) = rb::send_query(xml, rb::Kind::Response, relay, None) {
        let got = rb::receive(&query, rb::Kind::Response);
        let got = got
            .as_ref()
            .map(|g| (g.xml.as_str(), g.relay_state.as_deref()));
        assert_eq!(
            got.ok(),
            Some((xml, relay.filter(|r| !r.is_empty()))),
            "the redirect binding changed the message"
        );
    }
    if let Ok(req) = logout_message::read_request(xml) {
        let answer = logout_message::build_response("_a", "sp", "https://idp/slo", &req.id, "s");
        let back = logout_message::read_response(&answer);
        assert_eq!(
            back.ok().and_then(|r| r.in_response_to),
            Some(req.id.clone()),
            "a logout answer does not name the request it answers"
        );
    }
    let _ = logout_message::read_response(xml);
}

/// IdP metadata as the SAML provider loads it (unsigned: the signed path needs a key the
/// fuzzer cannot forge): an Idp or an error, never a panic.
pub fn saml_metadata(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::sso::saml::idp_metadata::parse(text, None, None);
        let _ = crate::sso::saml::idp_metadata::parse(text, None, Some("https://idp.example"));
    }
}

#[cfg(test)]
mod tests {
    //! The seeds of the newer targets must reach the checks behind the parsers (a seed that
    //! is refused early leaves the round-trip assertions to chance).
    use crate::mnet::{envelope, xmlrpc};
    use crate::sso::saml::{idp_metadata, logout_message, redirect_binding as rb, response_shape};

    fn seed(path: &str) -> String {
        let full = format!("{}/fuzz/seeds/{path}", env!("CARGO_MANIFEST_DIR"));
        String::from_utf8_lossy(&std::fs::read(full).unwrap()).into_owned()
    }

    #[test]
    fn seeds_reach_the_checks_behind_the_parsers() {
        let l = super::mnet_limits();
        assert!(envelope::parse_signed(&seed("mnet_envelope/signed"), &l).is_ok());
        assert!(envelope::parse_encrypted(&seed("mnet_envelope/encrypted"), &l).is_ok());
        assert!(xmlrpc::parse_call(&seed("mnet_xmlrpc/call"), &l).is_ok());
        assert!(xmlrpc::parse_response(&seed("mnet_xmlrpc/response"), &l).is_ok());
        assert!(matches!(
            xmlrpc::parse_response(&seed("mnet_xmlrpc/fault"), &l),
            Ok(xmlrpc::MethodResponse::Fault { code: 7025, .. })
        ));
        assert!(response_shape::check(&seed("saml_response_shape/plain")).is_ok());
        assert!(response_shape::check(&seed("saml_response_shape/encrypted")).is_ok());
        assert!(response_shape::check(&seed("saml_response_shape/wrapped")).is_err());
        let query = seed("saml_redirect/query_request");
        let got = rb::receive(&query[1..], rb::Kind::Request).unwrap();
        assert!(got.is_signed());
        assert!(logout_message::read_request(&got.xml).is_ok());
        let query = seed("saml_redirect/query_response");
        let got = rb::receive(&query[1..], rb::Kind::Response).unwrap();
        assert!(logout_message::read_response(&got.xml).is_ok());
        assert!(idp_metadata::parse(&seed("saml_metadata/entity"), None, None).is_ok());
        let all = seed("saml_metadata/entities");
        assert!(idp_metadata::parse(&all, None, Some("https://other.example")).is_ok());
    }
}
