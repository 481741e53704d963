//! The sanitize stage: refuse malformed or smuggled requests, strip what a client must never
//! send, and set the forwarding headers. hyper has already refused what it cannot parse (bad
//! chunk sizes, conflicting Content-Length values, obs-fold); this stage refuses what hyper lets
//! through but a Moodle behind us could read differently.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, StatusCode, Version};
use ipnet::IpNet;

use crate::context::RequestContext;
use crate::proxy::error_page::{error_response, ErrorStyle};
use crate::proxy::headers::{self, ClientAddr, ForwardHeaders, HeaderKinds};
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;

/// Why a request was refused, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: RefusalReason,
    pub message: &'static str,
}

/// The kinds of refusal; each is a metric label and an access-log note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// CONNECT or TRACE.
    Method,
    /// Not an origin-form target.
    BadTarget,
    /// Framing that the next hop could read differently.
    Smuggling,
    /// A declared Content-Length above `max_body_size`.
    BodyTooLarge,
    /// A missing, repeated or malformed Host.
    BadHost,
}

impl RefusalReason {
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Method => "method",
            RefusalReason::BadTarget => "bad_target",
            RefusalReason::Smuggling => "smuggling",
            RefusalReason::BodyTooLarge => "body_too_large",
            RefusalReason::BadHost => "bad_host",
        }
    }

    /// The framing of anything after such a request cannot be trusted either.
    pub fn closes_connection(self) -> bool {
        matches!(self, RefusalReason::Smuggling)
    }
}

impl PartialEq<&str> for RefusalReason {
    fn eq(&self, other: &&str) -> bool {
        self.label() == *other
    }
}

fn refuse(status: StatusCode, reason: RefusalReason, message: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        message,
    }
}

/// What the later stages learn from sanitizing.
#[derive(Debug, Clone)]
pub struct Sanitized {
    /// The Host the client asked for (from Host, or :authority on HTTP/2), forwarded as is;
    /// empty for an HTTP/1.0 request that named none. Visible ASCII (checked here).
    pub host: HeaderValue,
    pub client: ClientAddr,
    /// An HTTP/1.1 Upgrade (WebSocket) handshake: Connection/Upgrade must reach the upstream.
    pub upgrade: bool,
    /// The headers the forward stage adds to the request (X-Forwarded-*, X-Real-IP).
    pub forward: ForwardHeaders,
}

pub struct SanitizeInput<'a> {
    pub peer: IpAddr,
    /// The peer address as a header value (see `ConnInfo::peer_value`).
    pub peer_value: &'a HeaderValue,
    pub tls: bool,
    pub trusted_proxies: &'a [IpNet],
    pub max_body_size: u64,
    pub upgrade: bool,
    /// What `headers::request_header_kinds` found in the request's headers.
    pub kinds: HeaderKinds,
}

pub fn sanitize(
    parts: &mut request::Parts,
    input: &SanitizeInput<'_>,
) -> Result<Sanitized, Refusal> {
    let mut host = HeaderValue::from_static("");
    let mut forward = ForwardHeaders::default();
    let client = sanitize_into(parts, input, &mut host, &mut forward)?;
    Ok(Sanitized {
        host,
        client,
        upgrade: input.upgrade,
        forward,
    })
}

/// [`sanitize`], writing the Host and the forwarding headers into the caller's places (the
/// request context's), so that nothing large is moved on the way (docs/performance.md).
pub(crate) fn sanitize_into(
    parts: &mut request::Parts,
    input: &SanitizeInput<'_>,
    host_out: &mut HeaderValue,
    forward: &mut ForwardHeaders,
) -> Result<ClientAddr, Refusal> {
    check_method(&parts.method)?;
    check_target(parts)?;
    // Framing and size are about the body headers: a request with neither (most of them) has
    // nothing to look up.
    let kinds = input.kinds;
    if kinds.framing() {
        check_framing(&parts.headers, parts.version)?;
        check_body_size(&parts.headers, input.max_body_size)?;
    }
    let host = resolve_host(parts)?;

    // One pass over the names (made by the caller) says which of the rarer fixes below this
    // request needs.
    if kinds.reserved() {
        headers::strip_reserved_request_headers(&mut parts.headers);
    }
    if kinds.hop_by_hop() {
        headers::strip_hop_by_hop(&mut parts.headers, input.upgrade);
    }
    if parts.version == Version::HTTP_2 {
        merge_cookies(&mut parts.headers);
    }
    let peer_text = input.peer_value.to_str().unwrap_or_default();
    // Reads X-Forwarded-For/-Proto when the peer is a trusted proxy, so before they go.
    let client = headers::client_addr(input.peer, peer_text, &parts.headers, input.trusted_proxies);
    if kinds.forwarding() {
        headers::remove_forwarding(&mut parts.headers);
    }
    headers::write_forward_headers(
        &client,
        input.peer_value,
        if input.tls { "https" } else { "http" },
        &host,
        forward,
    );
    *host_out = host;
    Ok(client)
}

/// The sanitize stage: [`sanitize`] with the connection's facts, a refusal answered at once.
pub(crate) struct SanitizeStage;

impl Stage for SanitizeStage {
    const NAME: &'static str = "sanitize";

    async fn run(state: &Arc<State>, ctx: &mut RequestContext, req: &mut StageRequest) -> Flow {
        let cfg = &state.config;
        let input = SanitizeInput {
            peer: ctx.conn.peer.ip(),
            peer_value: &ctx.conn.peer_value,
            tls: ctx.conn.tls,
            trusted_proxies: &cfg.server.trusted_proxies,
            max_body_size: cfg.server.limits.max_body_size.bytes(),
            upgrade: req.upgrade,
            kinds: req.kinds,
        };
        match sanitize_into(&mut req.parts, &input, &mut ctx.host, &mut ctx.forward) {
            Ok(client) => {
                ctx.client_ip = client.ip;
                ctx.forward.x_request_id = Some(ctx.request_id.header_value().clone());
                Flow::Next
            }
            Err(refusal) => {
                let reason = refusal.reason.label();
                ctx.note = Some(reason);
                state
                    .process
                    .core
                    .rejected_requests
                    .with_label_values(&[reason])
                    .inc();
                let style = if state.guard.entry_kind(req.parts.uri.path()).is_some() {
                    ErrorStyle::MoodleJson
                } else {
                    ErrorStyle::Html
                };
                let mut resp = error_response(
                    refusal.status,
                    style,
                    refusal.message,
                    ctx.request_id.as_str(),
                );
                if refusal.reason.closes_connection() {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Flow::Answer(resp)
            }
        }
    }
}

fn check_method(method: &Method) -> Result<(), Refusal> {
    // A reverse proxy for a web application has no business tunnelling (CONNECT) or echoing
    // requests with their cookies back (TRACE); nginx refuses both too.
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            RefusalReason::Method,
            "This method is not allowed.",
        ));
    }
    Ok(())
}

fn check_target(parts: &request::Parts) -> Result<(), Refusal> {
    let path = parts.uri.path();
    if !path.starts_with('/') {
        // Authority form (CONNECT) or asterisk form (OPTIONS *): nothing Moodle serves.
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadTarget,
            "The request target is not a path.",
        ));
    }
    Ok(())
}

/// Request smuggling defences (RFC 9112 §6.1, §6.3).
fn check_framing(headers: &HeaderMap, version: Version) -> Result<(), Refusal> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    let first_cl = cl.next();
    if te && first_cl.is_some() {
        // Both framings at once is the classic CL.TE / TE.CL desync: refuse, never pick one.
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::Smuggling,
            "Content-Length and Transfer-Encoding together are not allowed.",
        ));
    }
    if te && version == Version::HTTP_10 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::Smuggling,
            "Transfer-Encoding is not allowed in HTTP/1.0.",
        ));
    }
    if cl.next().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::Smuggling,
            "More than one Content-Length.",
        ));
    }
    if let Some(v) = first_cl {
        let ok = !v.is_empty() && v.as_bytes().iter().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                RefusalReason::Smuggling,
                "Content-Length is not a number.",
            ));
        }
    }
    Ok(())
}

fn check_body_size(headers: &HeaderMap, max: u64) -> Result<(), Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            RefusalReason::BodyTooLarge,
            "The request body is larger than this site accepts.",
        ));
    }
    Ok(())
}

/// The host the client asked for. HTTP/1.1 needs exactly one Host header; an absolute-form
/// target's authority wins over it (RFC 9112 §3.2.2); HTTP/2 carries it as :authority.
/// The value is the Host header's own when the host came from it (shared, not copied).
fn resolve_host(parts: &mut request::Parts) -> Result<HeaderValue, Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first_host = hosts.next();
    if hosts.next().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadHost,
            "More than one Host header.",
        ));
    }
    let bad = || {
        refuse(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadHost,
            "The Host header is not valid.",
        )
    };
    let host = match (parts.uri.authority(), first_host) {
        (Some(authority), _) => {
            let text = authority.as_str();
            if !valid_host(text) {
                return Err(bad());
            }
            let value = HeaderValue::from_str(text).map_err(|_| bad())?;
            parts.headers.insert(header::HOST, value.clone());
            value
        }
        (None, Some(h)) => {
            let text = h.to_str().map_err(|_| bad())?;
            if !text.is_empty() && !valid_host(text) {
                return Err(bad());
            }
            h.clone()
        }
        (None, None) if parts.version == Version::HTTP_10 => HeaderValue::from_static(""),
        (None, None) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                RefusalReason::BadHost,
                "The Host header is missing.",
            ))
        }
    };
    Ok(host)
}

/// host[:port], a bracketed IPv6 literal, nothing else: no userinfo, paths or spaces.
fn valid_host(host: &str) -> bool {
    host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// HTTP/2 clients may split Cookie into several fields; an HTTP/1.1 upstream needs one
/// (RFC 9113 §8.2.3).
fn merge_cookies(headers: &mut HeaderMap) {
    let count = headers.get_all(header::COOKIE).iter().count();
    if count < 2 {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: Request<()>) -> request::Parts {
        req.into_parts().0
    }

    static PEER: HeaderValue = HeaderValue::from_static("192.0.2.7");

    /// Sanitizes with the header kinds found as the pipeline finds them.
    fn run(p: &mut request::Parts) -> Result<Sanitized, Refusal> {
        let kinds = headers::request_header_kinds(&p.headers);
        sanitize(p, &SanitizeInput { kinds, ..input() })
    }

    fn input() -> SanitizeInput<'static> {
        SanitizeInput {
            peer: "192.0.2.7".parse().unwrap(),
            peer_value: &PEER,
            tls: true,
            trusted_proxies: &[],
            max_body_size: 1000,
            upgrade: false,
            kinds: HeaderKinds::ALL,
        }
    }

    #[test]
    fn a_plain_request_gets_forwarding_headers() {
        let mut p = parts(
            Request::get("/course/view.php?id=2")
                .header("host", "lms.example.edu")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-accel-redirect", "/moodledata-internal/x")
                .body(())
                .unwrap(),
        );
        let s = run(&mut p).unwrap();
        assert_eq!(s.host, "lms.example.edu");
        // The client's own X-Forwarded-For is gone; the proxy's travels beside the map.
        assert!(!p.headers.contains_key("x-forwarded-for"));
        assert!(!p.headers.contains_key("x-accel-redirect"));
        let mut out = HeaderMap::new();
        s.forward.insert_into(&mut out);
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "lms.example.edu");
        assert_eq!(out["x-real-ip"], "192.0.2.7");
        assert!(!out.contains_key("x-request-id"));
        let mut line = Vec::new();
        s.forward.write_to(&mut line);
        assert_eq!(line.len(), s.forward.encoded_len());
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: lms.example.edu\r\nx-real-ip: 192.0.2.7\r\n"
        );
    }

    #[test]
    fn cl_and_te_together_are_refused() {
        // Defence in depth: hyper drops the Content-Length before this stage on HTTP/1, so
        // the wire-level refusal is the listener's (server/head_scan.rs, tested end to end in
        // tests/core_proxy.rs); this branch stays for a front end that keeps both.
        let mut p = parts(
            Request::post("/")
                .header("host", "h")
                .header("content-length", "5")
                .header("transfer-encoding", "chunked")
                .body(())
                .unwrap(),
        );
        assert_eq!(run(&mut p).unwrap_err().reason, "smuggling");
    }

    #[test]
    fn oversized_declared_body_is_413() {
        let mut p = parts(
            Request::post("/")
                .header("host", "h")
                .header("content-length", "1001")
                .body(())
                .unwrap(),
        );
        assert_eq!(run(&mut p).unwrap_err().status, 413);
    }

    #[test]
    fn missing_or_double_host_is_400() {
        let mut p = parts(Request::get("/").body(()).unwrap());
        assert_eq!(run(&mut p).unwrap_err().reason, "bad_host");
        let mut p = parts(
            Request::get("/")
                .header("host", "a")
                .header("host", "b")
                .body(())
                .unwrap(),
        );
        assert_eq!(run(&mut p).unwrap_err().reason, "bad_host");
        let mut p = parts(Request::get("/").header("host", "a b").body(()).unwrap());
        assert_eq!(run(&mut p).unwrap_err().reason, "bad_host");
    }

    #[test]
    fn trace_and_connect_are_refused() {
        let mut p = parts(
            Request::builder()
                .method("TRACE")
                .uri("/")
                .header("host", "h")
                .body(())
                .unwrap(),
        );
        assert_eq!(run(&mut p).unwrap_err().status, 405);
        let mut p = parts(
            Request::builder()
                .method("CONNECT")
                .uri("example.com:443")
                .header("host", "example.com:443")
                .body(())
                .unwrap(),
        );
        assert_eq!(run(&mut p).unwrap_err().status, 405);
    }

    #[test]
    fn h2_cookies_are_joined() {
        let mut p = parts(
            Request::get("https://lms/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .header("cookie", "MoodleSession=x")
                .body(())
                .unwrap(),
        );
        let s = run(&mut p).unwrap();
        assert_eq!(s.host, "lms");
        assert_eq!(p.headers["cookie"], "a=1; MoodleSession=x");
        assert_eq!(p.headers["host"], "lms");
    }
}
