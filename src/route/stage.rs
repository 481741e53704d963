//! The route stage: sets `ctx.route`, and answers the edge's own routes (the public health
//! path, a client asking for an internal offload prefix, the HTTPS redirect of a plain
//! listener).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{request, Response, StatusCode};

use super::{classify, EdgeRoute, Route, RouteTable};
use crate::body::ProxyBody;
use crate::context::RequestContext;
use crate::observe::readiness::readiness_response;
use crate::proxy::error_page::{error_response, ErrorStyle};
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;

/// The route stage: sets `ctx.route`, answers the edge's own routes.
pub(crate) struct RouteStage;

impl Stage for RouteStage {
    const NAME: &'static str = "route";

    async fn run(state: &Arc<State>, ctx: &mut RequestContext, req: &mut StageRequest) -> Flow {
        let cfg = &state.config;
        ctx.route = classify(
            req.parts.uri.path(),
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
                // Boxed, as are the other rarer stages: an async fn's future is as large as
                // its largest await, and hyper moves every request's future into place.
                return Flow::Answer(Box::pin(readiness_response(state)).await);
            }
            Route::Internal => {
                ctx.note = Some("internal_path");
                state
                    .process
                    .core
                    .rejected_requests
                    .with_label_values(&["internal_path"])
                    .inc();
                return Flow::Answer(error_response(
                    StatusCode::NOT_FOUND,
                    ErrorStyle::Html,
                    "Not found.",
                    ctx.request_id.as_str(),
                ));
            }
            _ => {}
        }
        if let Some(listen) = cfg.server.listen.get(ctx.conn.listener) {
            if listen.redirect_to_https {
                ctx.note = Some("https_redirect");
                let host = ctx.host.to_str().unwrap_or_default();
                return Flow::Answer(https_redirect(host, listen.https_port, &req.parts));
            }
        }
        Flow::Next
    }
}

/// A plain listener with `redirect_to_https`: 308 to the same host and target over HTTPS.
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
