//! One request, one path. Every request walks these stages in this order; each is a module of
//! its own with the one stage shape (`stage::Stage`), and this file only says the order:
//!
//! 1. accept        `server::listener`      TLS, SNI, connection limit, header-read timeout
//! 2. sanitize      `proxy::sanitize`       smuggling, reserved headers, X-Forwarded-*
//! 3. route         `route::stage`          classify once; the edge's own routes answered
//! 4. guard         `webservice::stage`     rate limits, concurrency caps, breaker, policy
//! 5. authenticate  `sso`                   single sign-on (answered here when it applies)
//! 6. forward       `proxy::upstream`       the upstream call, either client, with its timeouts
//! 7. respond       `respond`               offload files, pass answers through, error pages
//! 8. log           `observe::log_stage`    one line and the metrics, secrets redacted
//!
//! Stages ask to see the outcome through `ctx.watch`; their watchers run after the respond
//! stage (or when the upstream failed), in the order they asked.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderMap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::ProxyBody;
use crate::context::{ConnInfo, RequestContext, RequestId, Seen};
use crate::observe::log_stage;
use crate::proxy::headers::{self, HeaderKinds};
use crate::proxy::sanitize::SanitizeStage;
use crate::proxy::upgrade;
use crate::proxy::upstream::{recycle_header_map, UpstreamRequest};
use crate::respond;
use crate::route::stage::RouteStage;
use crate::sso::stage::SsoStage;
use crate::stage::{BodyLimits, Flow, RequestBody, Stage, StageRequest};
use crate::state::State;
use crate::webservice::stage::GuardStage;

/// The service function: runs the stages, then the log stage. The setup runs before the future
/// is made, so only what the stages need is in it: hyper moves the future once per request, and
/// every byte of it is copied (docs/performance.md).
pub(crate) fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
    let started = Instant::now();
    let in_flight = conn.head_clock.start();
    let on_upgrade = upgrade::is_upgrade_request(&req).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // The kinds of header the sanitize stage acts on, found in one pass over the names.
    let kinds = headers::request_header_kinds(&parts.headers);
    let mut ctx = RequestContext::new(conn, request_id(&parts.headers, kinds), started);
    let log_base = log_stage::LogBase::capture(&state, &parts);
    let limits = &state.config.server.limits;
    let mut req = StageRequest {
        parts,
        body: RequestBody::new(
            body,
            BodyLimits {
                max: limits.max_body_size.bytes(),
                idle: limits.client_body_timeout.get(),
            },
        ),
        upgrade: on_upgrade.is_some(),
        kinds,
    };
    async move {
        // The request and the context are lent to the stages, never moved: both are large,
        // and every move is a copy.
        let mut response = run_stages(&state, &mut ctx, &mut req, on_upgrade).await;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now carries another protocol; no request head will follow.
            ctx.conn.head_clock.turn_off();
        }
        response
            .headers_mut()
            .insert(headers::X_REQUEST_ID, ctx.request_id.header_value().clone());
        Ok(log_stage::finish(
            &state, &mut ctx, log_base, in_flight, response,
        ))
    }
}

/// Runs one stage; its answer, if it gave one, ends the request.
macro_rules! stage {
    ($stage:ty, $state:expr, $ctx:expr, $req:expr) => {
        if let Flow::Answer(response) = <$stage as Stage>::run($state, $ctx, $req).await {
            tracing::trace!(stage = <$stage as Stage>::NAME, status = %response.status(), "answered by a stage");
            return response;
        }
    };
}

async fn run_stages(
    state: &Arc<State>,
    ctx: &mut RequestContext,
    req: &mut StageRequest,
    on_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    stage!(SanitizeStage, state, ctx, req);
    stage!(RouteStage, state, ctx, req);
    stage!(GuardStage, state, ctx, req);
    stage!(SsoStage, state, ctx, req);
    stage!(crate::mnet::stage::MnetStage, state, ctx, req);

    // forward
    let exchange = state
        .upstream
        .send(
            &ctx.conn.response_timer,
            UpstreamRequest {
                parts: &mut req.parts,
                body: &mut req.body,
                forward: &ctx.forward,
                changes: &ctx.upstream_headers,
                on_upgrade: on_upgrade.filter(|_| req.upgrade),
                keep_headers: respond::PRECONDITION_HEADERS,
                started: ctx.started,
            },
        )
        .await;
    ctx.upstream_time = Some(exchange.timing.total);
    ctx.upstream_wait = Some(exchange.timing.upstream);
    ctx.answered = Some(exchange.timing.ended);

    // respond
    let mut response = match exchange.result {
        Ok(upstream) => {
            respond::respond(state, ctx, &req.parts.method, &req.parts.headers, upstream).await
        }
        Err(e) => {
            let response = respond::upstream_failed(state, ctx, &e);
            if !ctx.watchers.is_empty() {
                for watcher in std::mem::take(&mut ctx.watchers) {
                    watcher.upstream_failed(ctx, &e, response.status());
                }
            }
            return response;
        }
    };
    // The request's header map is read no more: it becomes a later response's.
    recycle_header_map(std::mem::take(&mut req.parts.headers));
    if !ctx.watchers.is_empty() {
        for watcher in std::mem::take(&mut ctx.watchers) {
            response = match watcher.response(ctx, response) {
                Seen::Now(r) => r,
                Seen::Later(f) => f.await,
            };
        }
    }
    response
}

/// The X-Request-Id to use: the client's (or front proxy's) when it is sane, else a new one.
/// `kinds` says whether the request has any forwarding header at all (most have none).
fn request_id(headers: &HeaderMap, kinds: HeaderKinds) -> RequestId {
    if kinds.forwarding() {
        if let Some(id) = headers
            .get(headers::X_REQUEST_ID)
            .and_then(RequestId::from_client)
        {
            return id;
        }
    }
    RequestId::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_sane_client_request_id_is_kept_and_a_bad_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert(headers::X_REQUEST_ID, HeaderValue::from_static("abc-123.x"));
        assert_eq!(request_id(&h, HeaderKinds::ALL).as_str(), "abc-123.x");
        h.insert(headers::X_REQUEST_ID, HeaderValue::from_static("bad id"));
        assert_eq!(request_id(&h, HeaderKinds::ALL).as_str().len(), 32);
    }
}
