//! The admin listener (`server.admin_addr`): /metrics, /healthz, /readyz. Never on a public
//! port; bind it to loopback or a management network.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::observe::health::{check_dataroot, Readiness};
use crate::observe::metrics;
use crate::state::{SharedState, State};

pub async fn handle(
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

fn text(status: StatusCode, content_type: &'static str, body_text: String) -> Response<ProxyBody> {
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
        .set((state.access_log.dropped() + state.audit_log.dropped()) as i64);
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

/// 200 when every check passes, else 503; the JSON body says which check failed.
pub async fn readiness_response(state: &State) -> Response<ProxyBody> {
    let cfg = &state.config;
    // A probe is "recent" when it is no older than three probe intervals.
    let freshness =
        cfg.upstream.health_check.interval.get() * 3 + cfg.upstream.health_check.timeout.get();
    let upstream = state.process.upstream_health.check(freshness);
    let dataroot = cfg.moodle.dataroot.clone();
    let dataroot = tokio::task::spawn_blocking(move || check_dataroot(&dataroot))
        .await
        .unwrap_or_else(|e| Err(format!("dataroot check failed: {e}")));
    let store = match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{} store: {e}", state.store.backend_name())),
        Err(_) => Err(format!(
            "{} store did not answer within 1s",
            state.store.backend_name()
        )),
    };
    let readiness = Readiness::from_checks(vec![
        ("upstream", upstream),
        ("dataroot", dataroot),
        ("store", store),
    ]);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let json = serde_json::to_string(&readiness).unwrap_or_else(|_| "{}".into());
    text(status, "application/json", json)
}
