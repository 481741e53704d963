//! One request, one path. Every request walks these stages in this order; each is a function
//! in its own module, and this file is the table of contents:
//!
//! 1. accept        `server::listener`      TLS, SNI, connection limit, header-read timeout
//! 2. sanitize      `proxy::sanitize`       smuggling, reserved headers, X-Forwarded-*
//! 3. route         `route`                 classify once: page, web service, SSO, MNet, edge
//! 4. guard         `webservice::guard`     rate limits, concurrency caps, breaker, policy
//! 5. authenticate  `sso`                   single sign-on (answered here when it applies)
//! 6. forward       `proxy::forward`        the pooled upstream call with its timeouts
//! 7. respond       `sendfile`, `proxy::*`  offload files, hop-by-hop, upgrades, error pages
//! 8. log           `observe::access_log`   one line and the metrics, secrets redacted

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::ProxyBody;
use crate::observe::access_log::{AccessRecord, Finish, LoggedBody};
use crate::observe::redact;
use crate::proxy::body::GuardedBody;
use crate::proxy::error_page::{error_response, ErrorStyle};
use crate::proxy::forward::{Forward, ForwardError, ResponseTimer, UpstreamBody};
use crate::proxy::sanitize::{self, SanitizeInput};
use crate::proxy::{headers, upgrade};
use crate::route::{self, EdgeRoute, Route, RouteTable};
use crate::sendfile::Offloader;
use crate::server::head_timeout::{HeadClock, InFlight};
use crate::state::State;
use crate::{server, sso, webservice};

/// What the accept stage knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP address as a header value, formatted once for the connection's requests
    /// (X-Forwarded-For and X-Real-IP).
    pub peer_value: HeaderValue,
    pub local: SocketAddr,
    pub tls: bool,
    /// The SNI name the client sent (picks the certificate, and later the tenant).
    pub sni: Option<String>,
    /// Index of the `server.listen` entry.
    pub listener: usize,
    /// The connection's header-read timeout clock (requests in flight count against it).
    pub head_clock: Arc<HeadClock>,
    /// The connection's reusable upstream response timer.
    pub response_timer: ResponseTimer,
}

impl ConnInfo {
    /// An IP address as a header value (an address's text is always a valid one).
    pub fn ip_value(ip: IpAddr) -> HeaderValue {
        HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
    }
}

/// A request's X-Request-Id, kept as the header value it is sent as (to the upstream and back
/// to the client), which is also its text: visible ASCII, checked once when it was made.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Made from visible ASCII only (see `request_id`), so this cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request context: what the stages learn about one request, in the order they learn it.
pub struct RequestContext {
    pub request_id: RequestId,
    pub started: Instant,
    pub route: Route,
    pub client_ip: IpAddr,
    /// The sanitized Host (see `Sanitized::host`).
    pub host: HeaderValue,
    pub upstream_time: Option<Duration>,
    /// The part of `upstream_time` after the whole request had been sent: the upstream's own
    /// time, without a slow client's upload.
    pub upstream_wait: Option<Duration>,
    /// When the upstream's answer head arrived. For an answer passed through, the proxy's work
    /// after it is well under a microsecond, so this reading doubles as the request's end for
    /// the duration metric (one clock read fewer); the offload stage clears it, as its file
    /// work belongs in the duration.
    pub answered: Option<Instant>,
    /// The file an offload served.
    pub offload: Option<String>,
    /// Why the edge answered by itself, when it did.
    pub note: Option<&'static str>,
    /// The response body is already in memory to its end and small (16 KiB at most): once
    /// handed to the connection it cannot stall or fail on the upstream's side.
    pub body_in_memory: bool,
}

/// The largest answer body the log stage treats as sent once its head is (see `pass_through`).
const IN_MEMORY_BODY_MAX: u64 = 16 * 1024;

/// The request headers the respond stage needs after the request itself went upstream.
const PRECONDITION_HEADERS: &[HeaderName] = &[
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The service function: runs the stages, then the log stage.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let in_flight = conn.head_clock.start();
    let on_upgrade = upgrade::is_upgrade_request(&req).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // The kinds of header the sanitize stage acts on, found in one pass over the names.
    let kinds = headers::request_header_kinds(&parts.headers);
    let mut ctx = RequestContext {
        request_id: request_id(&parts.headers, kinds),
        started,
        route: Route::Page,
        client_ip: conn.peer.ip(),
        host: HeaderValue::from_static(""),
        upstream_time: None,
        upstream_wait: None,
        answered: None,
        offload: None,
        note: None,
        body_in_memory: false,
    };
    let log_base = state.access_log.enabled().then(|| LogBase::from(&parts));
    let mut response = run_stages(&state, &conn, &mut ctx, parts, body, on_upgrade, kinds).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection now carries another protocol; no request head will follow.
        conn.head_clock.turn_off();
    }
    response
        .headers_mut()
        .insert(headers::X_REQUEST_ID, ctx.request_id.header_value().clone());
    Ok(log_stage(&state, &conn, ctx, log_base, in_flight, response))
}

async fn run_stages(
    state: &State,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
    mut parts: request::Parts,
    body: Incoming,
    on_upgrade: Option<OnUpgrade>,
    kinds: u8,
) -> Response<ProxyBody> {
    let cfg = &state.config;

    // 2. sanitize
    let sanitized = match sanitize::sanitize(
        &mut parts,
        &SanitizeInput {
            peer: conn.peer.ip(),
            peer_value: &conn.peer_value,
            tls: conn.tls,
            trusted_proxies: &cfg.server.trusted_proxies,
            max_body_size: cfg.server.limits.max_body_size.bytes(),
            upgrade: on_upgrade.is_some(),
            kinds,
        },
    ) {
        Ok(s) => s,
        Err(refusal) => {
            ctx.note = Some(refusal.reason);
            state
                .process
                .core
                .rejected_requests
                .with_label_values(&[refusal.reason])
                .inc();
            let style = style_for_path(state, parts.uri.path());
            let mut resp = error_response(
                refusal.status,
                style,
                refusal.message,
                ctx.request_id.as_str(),
            );
            if refusal.reason == "smuggling" {
                // The framing of anything after this request cannot be trusted either.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
    };
    ctx.client_ip = sanitized.client.ip;
    ctx.host = sanitized.host;
    let mut added = sanitized.forward;
    added.x_request_id = Some(ctx.request_id.header_value().clone());

    // 3. route
    ctx.route = route::classify(
        parts.uri.path(),
        &RouteTable {
            public_health_path: &cfg.server.public_health_path,
            is_internal: &|p| state.offloader.is_internal_path(p),
            entry_kind: &|p| state.guard.entry_kind(p),
            sso_intercept: cfg.sso.as_ref().map(|s| s.intercept.as_slice()),
            mnet: cfg.mnet.is_some(),
        },
    );
    match ctx.route {
        Route::Edge(EdgeRoute::Health) => {
            return Box::pin(server::admin::readiness_response(state)).await
        }
        Route::Internal => {
            ctx.note = Some("internal_path");
            state
                .process
                .core
                .rejected_requests
                .with_label_values(&["internal_path"])
                .inc();
            return error_response(
                StatusCode::NOT_FOUND,
                ErrorStyle::Html,
                "Not found.",
                ctx.request_id.as_str(),
            );
        }
        _ => {}
    }
    if let Some(listen) = cfg.server.listen.get(conn.listener) {
        if listen.redirect_to_https {
            ctx.note = Some("https_redirect");
            let host = ctx.host.to_str().unwrap_or_default();
            return https_redirect(host, listen.https_port, &parts);
        }
    }

    // 4. guard
    let (body, ws) = match ctx.route {
        Route::WebService(entry) => {
            // Boxed, as are the other rarer stages below: an async fn's future is as large as
            // its largest await, and hyper moves every request's future into place.
            match Box::pin(webservice::stage::guard(
                state,
                ctx,
                entry,
                &parts,
                crate::body::boxed(body),
            ))
            .await
            {
                Ok((body, admitted)) => (Either::Right(body), Some(admitted)),
                Err(response) => return response,
            }
        }
        // Boxed only if it goes the pooled way (most requests have no body to box).
        _ => (Either::Left(body), None),
    };

    // 5. authenticate
    if let Some(response) = sso::authenticate(state, ctx, &parts) {
        return response;
    }

    // 6. forward
    let forward = Forward {
        client: &state.client,
        timer: &conn.response_timer,
        target: &state.target,
        response_timeout: cfg.upstream.response_timeout.get(),
        metrics: &state.process.core,
    };
    let method = parts.method.clone();
    // Without a body or an upgrade (page views, downloads) the request takes the direct path
    // and is only lent to it; everything else goes through hyper's pooled client, whose larger
    // future is boxed so that it does not grow every request's future.
    let direct = state
        .direct
        .as_ref()
        .filter(|_| body.is_end_stream() && !sanitized.upgrade);
    let (result, timing, preconditions) = match direct {
        Some(direct) => {
            let (result, timing) = forward
                .send_direct(direct, &parts, &added, ctx.started)
                .await;
            (result, timing, parts.headers)
        }
        None => {
            let preconditions = copy_headers(&parts.headers, PRECONDITION_HEADERS);
            // A request without a body needs no size limit or idle timer on it.
            let (body, fate) = if body.is_end_stream() {
                (crate::body::empty(), None)
            } else {
                let (guarded, fate) = GuardedBody::new(
                    body,
                    Some(cfg.server.limits.max_body_size.bytes()),
                    cfg.server.limits.client_body_timeout.get(),
                );
                (guarded.boxed_unsync(), Some(fate))
            };
            let (result, timing) = Box::pin(forward.send(parts, &added, body, fate)).await;
            (result, timing, preconditions)
        }
    };
    ctx.upstream_time = Some(timing.total);
    ctx.upstream_wait = Some(timing.upstream);
    ctx.answered = Some(timing.ended);
    let upstream = match result {
        Ok(r) => r,
        Err(e) => {
            let response = forward_error_response(state, ctx, &e);
            if let Some(ws) = ws {
                ws.upstream_failed(state, ctx, &e, response.status());
            }
            return response;
        }
    };

    // 7. respond
    let response = if Offloader::wants_offload(upstream.headers()) {
        ctx.answered = None;
        Box::pin(offload(state, ctx, &method, &preconditions, upstream)).await
    } else {
        pass_through(state, ctx, upstream, on_upgrade, sanitized.upgrade)
    };
    // The request's header map is read no more: it becomes a later response's.
    crate::proxy::direct::recycle_header_map(preconditions);
    match ws {
        Some(ws) => ws.watch_response(state, ctx, response),
        None => response,
    }
}

/// The X-Request-Id to use: the client's (or front proxy's) when it is sane, else a new one.
/// `kinds` says whether the request has any forwarding header at all (most have none).
fn request_id(headers: &HeaderMap, kinds: u8) -> RequestId {
    if kinds & headers::kind::FORWARDING != 0 {
        if let Some(id) = headers.get(headers::X_REQUEST_ID) {
            let bytes = id.as_bytes();
            if !bytes.is_empty()
                && bytes.len() <= 128
                && bytes.iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
                })
            {
                return RequestId(id.clone());
            }
        }
    }
    new_request_id()
}

/// 128 random bits as 32 lower-case hex digits, from a per-thread SmallRng seeded from the
/// thread's ChaCha generator: a request id is a correlation handle, not a secret, and the
/// ChaCha generator behind `rand::random` cost more than the rest of the request id handling
/// together. Two digits at a time from a table, written into an array, allocated once.
fn new_request_id() -> RequestId {
    use rand::{Rng, SeedableRng};
    thread_local! {
        static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const PAIRS: [[u8; 2]; 256] = {
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
            i += 1;
        }
        t
    };
    let bits: u128 = IDS.with(|rng| rng.borrow_mut().random());
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    // Owned by a reference-counted allocation from the start: the clones for the upstream
    // request and the response are then counts, where a copied value would allocate again on
    // its first clone.
    RequestId(
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    )
}

/// Copies the headers named in `names`: one pass with cheap name comparisons, since most
/// requests carry none of them.
fn copy_headers(from: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from.iter() {
        if names.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn style_for_path(state: &State, path: &str) -> ErrorStyle {
    if state.guard.entry_kind(path).is_some() {
        ErrorStyle::MoodleJson
    } else {
        ErrorStyle::Html
    }
}

fn style_for(ctx: &RequestContext) -> ErrorStyle {
    match ctx.route {
        Route::WebService(_) => ErrorStyle::MoodleJson,
        _ => ErrorStyle::Html,
    }
}

fn https_redirect(host: &str, port: Option<u16>, parts: &request::Parts) -> Response<ProxyBody> {
    let bare_host = match host.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']') =>
        {
            h
        }
        _ => host,
    };
    let port = match port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{bare_host}{port}{target}");
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn forward_error_response(
    state: &State,
    ctx: &mut RequestContext,
    e: &ForwardError,
) -> Response<ProxyBody> {
    let core = &state.process.core;
    if let Some(kind) = e.upstream_kind() {
        core.upstream_errors.with_label_values(&[kind]).inc();
        tracing::warn!(request_id = %ctx.request_id, error = %e, "upstream failed");
    }
    let (status, note, message) = match e {
        ForwardError::Connect(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_connect",
            "The site is not answering. Please try again shortly.",
        ),
        ForwardError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "The site took too long to answer.",
        ),
        ForwardError::Protocol(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_protocol",
            "The site sent a broken answer.",
        ),
        ForwardError::BodyTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The request body is larger than this site accepts.",
        ),
        ForwardError::ClientBodyTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "client_body_timeout",
            "The request body stopped arriving.",
        ),
        // Nobody is left to read this answer; 499 is what nginx logs for it.
        ForwardError::ClientGone => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "client_gone",
            "The client went away.",
        ),
        ForwardError::BadUri(_) => (
            StatusCode::BAD_REQUEST,
            "bad_target",
            "The request target is not valid.",
        ),
    };
    ctx.note = Some(note);
    if e.upstream_kind().is_none() {
        core.rejected_requests.with_label_values(&[note]).inc();
    }
    let mut resp = error_response(status, style_for(ctx), message, ctx.request_id.as_str());
    if matches!(
        e,
        ForwardError::BodyTooLarge | ForwardError::ClientBodyTimeout | ForwardError::ClientGone
    ) {
        // The rest of the request body is still on the wire: do not read it as a new request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An ordinary answer: hop-by-hop headers out, body streamed with the idle timeout.
fn pass_through(
    state: &State,
    ctx: &mut RequestContext,
    upstream: Response<UpstreamBody>,
    on_upgrade: Option<OnUpgrade>,
    upgrade_requested: bool,
) -> Response<ProxyBody> {
    let (mut parts, body) = upstream.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let (Some(client), true, UpstreamBody::Pooled(body)) =
            (on_upgrade, upgrade_requested, body)
        {
            let mut upstream = Response::from_parts(parts.clone(), body);
            upgrade::join(client, hyper::upgrade::on(&mut upstream));
            headers::strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, crate::body::empty());
        }
        // A 101 nobody asked for cannot be honoured.
        return error_response(
            StatusCode::BAD_GATEWAY,
            ErrorStyle::Html,
            "Unexpected protocol switch.",
            "",
        );
    }
    // The direct path keeps hop-by-hop headers out of the map and settles the framing itself;
    // hyper's client hands over what the upstream sent.
    if let UpstreamBody::Pooled(_) = body {
        // Transfer-Encoding wins over Content-Length, and the length must not reach the client
        // with the re-framed body (RFC 9112 §6.3): a client trusting it would cut it short.
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
    }
    strip_offload_controls(&mut parts.headers);
    if body.cannot_stall() {
        // Already read to its end: no idle timer to guard it with. A small one (what fits a
        // socket's send buffer at once) is also done as far as the log stage is concerned: it
        // cannot keep the connection busy, so the header-read clock may run again now.
        ctx.body_in_memory = body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= IN_MEMORY_BODY_MAX);
        return Response::from_parts(parts, body.boxed_unsync());
    }
    let (body, _fate) = GuardedBody::new(body, None, state.config.upstream.idle_timeout.get());
    Response::from_parts(parts, body.boxed_unsync())
}

/// nginx never passes X-Accel-* controls to the client, whether or not it acted on them.
fn strip_offload_controls(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-accel-") || n.as_str() == "x-sendfile")
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// The upstream asked for a file: release it at once and stream the file ourselves.
async fn offload(
    state: &State,
    ctx: &mut RequestContext,
    method: &Method,
    preconditions: &HeaderMap,
    upstream: Response<UpstreamBody>,
) -> Response<ProxyBody> {
    let (parts, body) = upstream.into_parts();
    release_upstream(body);
    let result = state.offloader.respond(method, preconditions, parts).await;
    if let Some(reason) = result.refusal {
        ctx.note = Some(reason);
        tracing::debug!(request_id = %ctx.request_id, reason, "offload refused");
    }
    ctx.offload = result.file.map(|f| f.display().to_string());
    let mut response = result.response;
    headers::strip_hop_by_hop(response.headers_mut(), false);
    response
}

/// Reads what is left of an offload answer's body (Moodle sends none) so the connection goes
/// back to the pool; a body that keeps coming is dropped, which closes that connection.
fn release_upstream(body: UpstreamBody) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let drain = async {
            let mut body = body;
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        seen += f.data_ref().map_or(0, |d| d.len());
                        if seen > 64 * 1024 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    });
}

/// What the access log needs from the request head, taken before the head moves on.
struct LogBase {
    method: String,
    target: String,
    protocol: &'static str,
    user_agent: String,
    referer: String,
}

impl LogBase {
    fn from(parts: &request::Parts) -> Self {
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect::<String>())
                .unwrap_or_default()
        };
        LogBase {
            method: parts.method.as_str().to_string(),
            target: redact::redact_target(parts.uri.path(), parts.uri.query()),
            protocol: match parts.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
            user_agent: header(header::USER_AGENT),
            referer: header(header::REFERER),
        }
    }
}

// 8. log
fn log_stage(
    state: &State,
    conn: &ConnInfo,
    ctx: RequestContext,
    base: Option<LogBase>,
    in_flight: InFlight,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let core = &state.process.core;
    let ended = ctx.answered.unwrap_or_else(Instant::now);
    if let Some(h) = core.route_duration.get(ctx.route.index()) {
        h.observe(ended.saturating_duration_since(ctx.started).as_secs_f64());
    }
    let status = response.status().as_u16();
    let (route, started) = (ctx.route, ctx.started);
    // The line's fields are gathered only when there is an access log to write them to.
    let record = match base {
        None if ctx.body_in_memory => {
            // No line to complete and nothing left to wait for: the request is counted now,
            // and its body goes out unwrapped.
            core.count_request(route, status);
            in_flight.end_at(ended);
            return response;
        }
        None => None,
        Some(base) => Some(Box::new(AccessRecord {
            time: SystemTime::UNIX_EPOCH,
            request_id: ctx.request_id.to_string(),
            client_ip: ctx.client_ip,
            method: base.method,
            host: ctx.host.to_str().unwrap_or_default().to_string(),
            target: base.target,
            protocol: base.protocol,
            tls: conn.tls,
            route: route.label(),
            status,
            bytes_sent: 0,
            duration_ms: 0.0,
            upstream_ms: ctx.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
            offload: ctx.offload,
            note: ctx.note,
            complete: false,
            user_agent: base.user_agent,
            referer: base.referer,
        })),
    };
    let mut finish = Finish::new(
        route,
        status,
        record,
        started,
        state.access_log.clone(),
        state.access_format,
        core.clone(),
    );
    // The connection counts as busy until the answer has been sent (or abandoned).
    finish.hold(in_flight);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, LoggedBody::new(body, finish).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.as_str().len(), 32);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_a_bad_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert(headers::X_REQUEST_ID, HeaderValue::from_static("abc-123.x"));
        assert_eq!(
            request_id(&h, headers::kind::FORWARDING).as_str(),
            "abc-123.x"
        );
        h.insert(headers::X_REQUEST_ID, HeaderValue::from_static("bad id"));
        assert_eq!(request_id(&h, headers::kind::FORWARDING).as_str().len(), 32);
    }
}
