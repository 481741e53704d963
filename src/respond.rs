//! The respond stage: turn the upstream's answer (or its failure) into the client's answer.
//! An `X-Accel-Redirect` / `X-Sendfile` answer becomes a file stream (`sendfile`), any other
//! passes through with its body under the idle timeout, and a failure becomes an error page
//! in the request's style (Moodle JSON on web-service routes, HTML elsewhere).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::context::RequestContext;
use crate::proxy::body::GuardedBody;
use crate::proxy::error_page::{error_response, ErrorStyle};
use crate::proxy::headers;
use crate::proxy::upstream::{ForwardError, UpstreamBody};
use crate::route::Route;
use crate::sendfile::Offloader;
use crate::state::State;

/// The request headers the respond stage needs after the request itself went upstream.
pub(crate) const PRECONDITION_HEADERS: &[HeaderName] = &[
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The largest answer body the log stage treats as sent once its head is (see `pass_through`).
const IN_MEMORY_BODY_MAX: u64 = 16 * 1024;

/// The client's answer to an upstream answer. `request_headers` holds at least the
/// [`PRECONDITION_HEADERS`] of the request.
pub(crate) async fn respond(
    state: &State,
    ctx: &mut RequestContext,
    method: &Method,
    request_headers: &HeaderMap,
    upstream: Response<UpstreamBody>,
) -> Response<ProxyBody> {
    if Offloader::wants_offload(upstream.headers()) {
        ctx.answered = None;
        Box::pin(offload(state, ctx, method, request_headers, upstream)).await
    } else {
        pass_through(state, ctx, upstream)
    }
}

/// The error page for an upstream that did not answer (or a client that failed its side).
pub(crate) fn upstream_failed(
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
        ForwardError::UnexpectedSwitch => (
            StatusCode::BAD_GATEWAY,
            "upstream_protocol",
            "Unexpected protocol switch.",
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
        ForwardError::MalformedBody => (
            StatusCode::BAD_REQUEST,
            "bad_body",
            "The request body is malformed.",
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
        ForwardError::BodyTooLarge
            | ForwardError::ClientBodyTimeout
            | ForwardError::ClientGone
            | ForwardError::MalformedBody
    ) {
        // The rest of the request body is still on the wire: do not read it as a new request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn style_for(ctx: &RequestContext) -> ErrorStyle {
    match ctx.route {
        Route::WebService(_) => ErrorStyle::MoodleJson,
        _ => ErrorStyle::Html,
    }
}

/// An ordinary answer (already normalised by the upstream interface): offload controls out,
/// body streamed with the idle timeout.
fn pass_through(
    state: &State,
    ctx: &mut RequestContext,
    upstream: Response<UpstreamBody>,
) -> Response<ProxyBody> {
    let (mut parts, body) = upstream.into_parts();
    headers::strip_offload_controls(&mut parts.headers);
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
