//! The admin listener (`server.admin_addr`): /metrics, /healthz, /readyz. Never on a public
//! port; bind it to loopback or a management network.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::observe::metrics;
use crate::observe::readiness::readiness_response;
use crate::state::{SharedState, State};

pub(crate) async fn handle(
    shared: SharedState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let state = shared.load_full();
    let response = match req.uri().path() {
        "/metrics" => metrics_response(&state),
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "OK\n".into()),
        "/readyz" => readiness_response(&state).await,
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Not found\n".into(),
        ),
    };
    Ok(response)
}

pub(crate) fn text(
    status: StatusCode,
    content_type: &'static str,
    body_text: String,
) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(body_text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn metrics_response(state: &Arc<State>) -> Response<ProxyBody> {
    let p = &state.process;
    p.core
        .log_lines_dropped
        .set(crate::observe::sink::dropped_total() as i64);
    match metrics::render(&p.registry) {
        Ok(bytes) => {
            let mut r = Response::new(body::full(bytes));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}
