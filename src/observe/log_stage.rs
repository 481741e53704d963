//! The log stage: the request's duration and count metrics, and its access-log line, finished
//! when the answer's body has been sent (or abandoned).

use std::time::Instant;

use http::{header, request, HeaderValue, Method, Response, Uri, Version};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::context::RequestContext;
use crate::observe::access_log::{micros, AccessRecord, Finish, LoggedBody};
use crate::state::State;
use crate::timer::head_clock::InFlight;

/// What the access log needs from the request head, taken before the head moves on (cheap
/// clones: the line is formatted, redacted and capped only when it is written).
pub(crate) struct LogBase {
    method: Method,
    uri: Uri,
    protocol: &'static str,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

impl LogBase {
    /// The head's fields, gathered only when there is an access log to write them to.
    pub(crate) fn capture(state: &State, parts: &request::Parts) -> Option<LogBase> {
        if !state.access_log.enabled() {
            return None;
        }
        Some(LogBase {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            protocol: match parts.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
            referer: parts.headers.get(header::REFERER).cloned(),
        })
    }
}

/// Counts the request and, when there is an access log, wraps the body so its line is written
/// when the body ends. The context is lent (a move would copy it); what the line keeps is
/// taken out of it.
pub(crate) fn finish(
    state: &State,
    ctx: &mut RequestContext,
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
            request_id: ctx.request_id.header_value().clone(),
            client_ip: ctx.client_ip,
            method: base.method,
            host: std::mem::replace(&mut ctx.host, HeaderValue::from_static("")),
            uri: base.uri,
            protocol: base.protocol,
            tls: ctx.conn.tls,
            route: route.label(),
            status,
            bytes_sent: 0,
            duration_us: 0,
            upstream_us: ctx.upstream_time.map(micros),
            offload: ctx.offload.take(),
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
