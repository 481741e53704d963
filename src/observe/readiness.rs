//! Readiness (`/readyz` on the admin listener, and `server.public_health_path` on the public
//! one): the upstream probe is recent and good, the dataroot is there, the store answers (or,
//! by `store.on_error.readiness`, is reported degraded without failing readiness).

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::observe::health::{check_dataroot, CheckResult, Readiness};
use crate::state::State;
use crate::store::config::ReadinessPolicy;

/// 200 when every check passes, else 503; the JSON body says which check failed.
pub(crate) async fn readiness_response(state: &State) -> Response<ProxyBody> {
    let cfg = &state.config;
    // A probe is "recent" when it is no older than three probe intervals.
    let freshness =
        cfg.upstream.health_check.interval.get() * 3 + cfg.upstream.health_check.timeout.get();
    let upstream = state.process.upstream_health.check(freshness);
    let dataroot = cfg.moodle.dataroot.clone();
    let dataroot = tokio::task::spawn_blocking(move || check_dataroot(&dataroot))
        .await
        .unwrap_or_else(|e| Err(format!("dataroot check failed: {e}")));
    // The store's own timeouts bound the ping; this bounds a misconfigured sum of them.
    let store = match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{} store: {e}", state.store.backend_name())),
        Err(_) => Err(format!(
            "{} store did not answer within 1s",
            state.store.backend_name()
        )),
    };
    // A failing shared store is "degraded" by default: the replicas share one Redis, so a 503
    // would make the load balancer pull every replica at once, while pages without a session
    // (and sessions in each replica's cache) can still be served. docs/scale-out.md.
    let degraded = state.config.store.on_error.readiness == ReadinessPolicy::Degraded;
    let store_error = store.as_ref().err().cloned();
    let mut checks = vec![("upstream", upstream), ("dataroot", dataroot)];
    if !degraded || store_error.is_none() {
        checks.push(("store", store));
    }
    let mut readiness = Readiness::from_checks(checks);
    if let (true, Some(e)) = (degraded, store_error) {
        readiness.checks.push(CheckResult {
            name: "store",
            ok: false,
            error: Some(e),
        });
        readiness.warnings.push(
            "store degraded: new logins are refused; cached sessions and pages without a session are served"
                .into(),
        );
    }
    readiness
        .warnings
        .extend(state.mnet.as_ref().and_then(|m| m.expiry_warning_now()));
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let json = serde_json::to_string(&readiness).unwrap_or_else(|_| "{}".into());
    let mut r = Response::new(body::full(json));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
