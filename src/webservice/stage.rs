//! The guard stage as the pipeline runs it: find the call's parameters (the query string, and
//! a bounded peek into a form body that still reaches Moodle byte for byte), admit the call
//! through the [`Guard`](super::Guard), then watch its outcome (a [`Watch`]) to feed the
//! breaker, the metrics and the audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::{Method, Response, StatusCode};

use crate::body::ProxyBody;
use crate::context::RequestContext;
use crate::context::{Seen, Watch};
use crate::proxy::upstream::ForwardError;
use crate::route::Route;
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;
use crate::webservice::audit::AuditLog;
use crate::webservice::entry::EntryKind;
use crate::webservice::errors::{error_response, shape_for};
use crate::webservice::outcome::{self, CallReport, UpstreamFailure};
use crate::webservice::params;
use crate::webservice::{Admission, WsCall};

/// An admitted call, carried from the guard stage to the respond stage.
pub(crate) struct WsAdmitted {
    call: WsCall,
    admission: Admission,
    admitted_at: Instant,
    /// The audit log of the state that admitted the call (a reload may swap the state).
    audit: AuditLog,
}

/// The guard stage: applies to web-service routes only.
pub(crate) struct GuardStage;

impl Stage for GuardStage {
    const NAME: &'static str = "guard";

    async fn run(state: &Arc<State>, ctx: &mut RequestContext, req: &mut StageRequest) -> Flow {
        let Route::WebService(entry) = ctx.route else {
            return Flow::Next;
        };
        // Boxed: the rare case's future stays out of every request's.
        Box::pin(guard(state, ctx, entry, req)).await
    }
}

/// Finds the call's parameters, then admits it or answers the refusal.
async fn guard(
    state: &State,
    ctx: &mut RequestContext,
    entry: EntryKind,
    req: &mut StageRequest,
) -> Flow {
    let parts = &req.parts;
    let query = params::query_params(parts.uri.query().unwrap_or(""));
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let inspect = (parts.method == Method::POST || parts.method == Method::PUT)
        && params::inspects_body(entry, content_type.as_deref());
    let body_params = if inspect {
        match req.body.peek(state.guard.max_inspect_body()).await {
            Ok(prefix) => {
                let prefix = prefix.clone();
                let ended = req.body.complete();
                Some(params::scan_call_body(entry, content_type.as_deref(), &prefix, ended).await)
            }
            Err(e) => {
                ctx.note = Some("ws_body_unreadable");
                tracing::debug!(request_id = %ctx.request_id, error = %e, "web-service body unreadable");
                let call = WsCall::new(
                    entry,
                    req.parts.uri.path(),
                    ctx.client_ip,
                    params::merge(entry, &query, None),
                );
                return Flow::Answer(error_response(
                    StatusCode::BAD_REQUEST,
                    shape_for(call.entry, call.format),
                    "invalidrequest",
                    "The request body could not be read.",
                    None,
                ));
            }
        }
    } else if parts.method == Method::POST || parts.method == Method::PUT {
        Some(params::BodyParams::none())
    } else {
        None
    };
    let call = WsCall::new(
        entry,
        req.parts.uri.path(),
        ctx.client_ip,
        params::merge(entry, &query, body_params.as_ref()),
    );
    let started = Instant::now();
    match state.guard.admit(&call).await {
        Ok(admission) => {
            ctx.watch(Box::new(WsAdmitted {
                call,
                admission,
                admitted_at: Instant::now(),
                audit: AuditLog::new(state.audit_log.clone()),
            }));
            Flow::Next
        }
        Err(rejection) => {
            ctx.note = Some(rejection.reason());
            AuditLog::new(state.audit_log.clone()).record_rejection(
                &call,
                &rejection,
                started.elapsed(),
                Some(ctx.request_id.as_str()),
            );
            Flow::Answer(rejection.into_response(&call))
        }
    }
}

impl WsAdmitted {
    /// Moodle's time to answer: the forward's wait after the whole request had been sent
    /// (`upstream_wait`). PHP starts only once the body is in, so a slow upload is the client's
    /// time, not Moodle's; counted as Moodle's, a few slow uploads (even without a valid token)
    /// would open the breaker for everyone.
    fn moodle_time(&self, ctx: &RequestContext) -> Duration {
        ctx.upstream_wait
            .unwrap_or_else(|| self.admitted_at.elapsed())
    }
}

impl Watch for WsAdmitted {
    /// The upstream gave no answer: that is a breaker failure (connect, timeout, protocol);
    /// a client that went away or sent too much is not Moodle's fault and is not counted.
    fn upstream_failed(
        self: Box<Self>,
        ctx: &RequestContext,
        e: &ForwardError,
        status: StatusCode,
    ) {
        let kind = match e {
            ForwardError::Connect(_) => UpstreamFailure::Refused,
            ForwardError::Timeout(_) => UpstreamFailure::Timeout,
            ForwardError::Protocol(_) => UpstreamFailure::BadGateway,
            _ => {
                // Dropping the admission frees the slot without recording a result.
                return;
            }
        };
        let mut report = CallReport::upstream_failure(kind);
        report.status = Some(status.as_u16());
        let waited = self.admitted_at.elapsed();
        let moodle_time = self.moodle_time(ctx);
        self.audit
            .record(&self.call, &report, waited, Some(ctx.request_id.as_str()));
        self.admission.finish(&report, moodle_time);
    }

    /// Follows the answer: when its body has been sent, the outcome (HTTP status and any Moodle
    /// exception in the body) goes to the breaker, the metrics and the audit log.
    fn response(self: Box<Self>, ctx: &RequestContext, response: Response<ProxyBody>) -> Seen {
        // The breaker judges Moodle's time to answer: neither the client's upload (see
        // `moodle_time`) nor its download.
        let to_headers = self.moodle_time(ctx);
        let request_id = ctx.request_id.to_string();
        let WsAdmitted {
            call,
            admission,
            admitted_at,
            audit,
        } = *self;
        Seen::Now(outcome::wrap_response(response, move |report| {
            let total: Duration = admitted_at.elapsed();
            audit.record(&call, &report, total, Some(&request_id));
            admission.finish(&report, to_headers);
        }))
    }
}
