//! The web-service guard stage: the facade the proxy core calls.
//!
//! Per call: [`Guard::admit`] applies the function policy and token networks, then every rate
//! limit, then the circuit breaker(s), then waits (bounded) for a per-token concurrency slot.
//! The [`Admission`] it returns travels with the call; when the answer has been sent (or the
//! call failed), [`Admission::finish`] feeds the breaker and metrics and frees the slot.
//!
//! Typical wiring in the proxy core:
//! ```text
//! let params = params::merge(kind, &params::query_params(q), body_params.as_ref());
//! let call = WsCall::new(kind, path, client_ip, params);
//! let admission = guard.admit(&call).await.map_err(|r| r.into_response(&call))?;
//! let started = Instant::now();
//! match forward(req).await {
//!     Ok(resp) => { let ttfb = started.elapsed();
//!                   outcome::wrap_response(resp, move |report| admission.finish(&report, ttfb)) }
//!     Err(kind) => { admission.finish(&CallReport::upstream_failure(kind), started.elapsed()); .. }
//! }
//! ```
//! Pass the time to response headers as `duration`: that is what Moodle controls; a slow
//! client downloading a big file must not count as a slow call.

pub(crate) use crate::webservice::entry::WsFormat;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::ProxyBody;
use crate::store::Store;
use crate::webservice::breaker::{
    retry_after_secs, Breaker, BreakerSettings, Ticket, Transition, UPSTREAM_SCOPE,
};
use crate::webservice::breaker_sync::{self, BreakerSync};
use crate::webservice::concurrency::{ConcurrencyCaps, SlotWait};
use crate::webservice::config::{Sharing, WebserviceConfig};
use crate::webservice::entry::{self, EntryKind};
use crate::webservice::errors::{error_response, shape_for};
use crate::webservice::limits::RateLimits;
use crate::webservice::metrics::WebserviceMetrics;
use crate::webservice::outcome::CallReport;
use crate::webservice::params::Params;
use crate::webservice::policy::{Policy, PolicyRefusal};
use crate::webservice::shared_limits::{SharedLimits, SharedRefusal};

/// A config value the guard cannot work with; `key` is the full key path.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct GuardConfigError {
    pub key: String,
    pub message: String,
}

/// One web-service call as the guard sees it. `token` and `function` are in the normal forms of
/// `params::merge` (use [`WsCall::new`]).
#[derive(Debug, Clone)]
pub struct WsCall {
    pub entry: EntryKind,
    pub path: String,
    pub token: Option<String>,
    pub function: Option<String>,
    pub format: WsFormat,
    pub client_ip: IpAddr,
    /// Every parameter was seen (body read to its end, no key given twice). Checks that a hidden
    /// value could defeat refuse the call when false.
    pub complete: bool,
}

impl WsCall {
    pub fn new(
        entry: EntryKind,
        path: impl Into<String>,
        client_ip: IpAddr,
        params: Params,
    ) -> Self {
        WsCall {
            entry,
            path: path.into(),
            token: params.token,
            function: params.function,
            format: params.format,
            client_ip,
            complete: params.complete,
        }
    }
}

#[derive(Debug, Clone)]
enum RejectionKind {
    Policy(PolicyRefusal),
    RateLimited {
        retry_after: u64,
    },
    Concurrency,
    BreakerOpen {
        retry_after: u64,
    },
    /// Shared limits cannot be checked (Redis out) and `on_store_error` is `closed`.
    LimitsUnavailable {
        retry_after: u64,
    },
}

/// A refused call. Turn it into the answer with [`Rejection::into_response`].
#[derive(Debug, Clone)]
pub struct Rejection {
    kind: RejectionKind,
}

impl Rejection {
    /// A short stable reason, for logs: `policy:<refusal>`-style names without a prefix.
    pub fn reason(&self) -> &'static str {
        match &self.kind {
            RejectionKind::Policy(r) => r.as_str(),
            RejectionKind::RateLimited { .. } => "rate_limited",
            RejectionKind::Concurrency => "concurrency",
            RejectionKind::BreakerOpen { .. } => "breaker_open",
            RejectionKind::LimitsUnavailable { .. } => "limits_unavailable",
        }
    }

    /// 403 for policy refusals: Moodle itself would say 200 + `accessexception`, but an edge
    /// refusal is not Moodle's answer and monitoring should see it as a refusal. 429 for limits,
    /// 503 while the breaker is open.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            RejectionKind::Policy(_) => StatusCode::FORBIDDEN,
            RejectionKind::RateLimited { .. } | RejectionKind::Concurrency => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RejectionKind::BreakerOpen { .. } | RejectionKind::LimitsUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Seconds for Retry-After, if any.
    pub fn retry_after(&self) -> Option<u64> {
        match &self.kind {
            RejectionKind::Policy(_) => None,
            RejectionKind::RateLimited { retry_after }
            | RejectionKind::BreakerOpen { retry_after }
            | RejectionKind::LimitsUnavailable { retry_after } => Some(*retry_after),
            RejectionKind::Concurrency => Some(1),
        }
    }

    pub fn into_response(self, call: &WsCall) -> http::Response<ProxyBody> {
        let shape = shape_for(call.entry, call.format);
        let retry = self.retry_after();
        let (code, message) = match &self.kind {
            RejectionKind::Policy(PolicyRefusal::TokenNetwork) => (
                "accessexception",
                "Access control exception: this token may not be used from this address".to_string(),
            ),
            RejectionKind::Policy(PolicyRefusal::Uninspectable) => (
                "accessexception",
                "Access control exception: the request could not be checked (send each parameter once, in a smaller body)".to_string(),
            ),
            RejectionKind::Policy(_) => (
                "accessexception",
                "Access control exception: this function is not available here".to_string(),
            ),
            RejectionKind::RateLimited { retry_after } => (
                "toomanyrequests",
                format!("Too many web service calls; retry in {retry_after} seconds"),
            ),
            RejectionKind::Concurrency => (
                "toomanyrequests",
                "Too many calls in progress for this token; retry shortly".to_string(),
            ),
            RejectionKind::BreakerOpen { retry_after } => (
                "serviceunavailable",
                format!("Web services are temporarily unavailable; retry in {retry_after} seconds"),
            ),
            RejectionKind::LimitsUnavailable { retry_after } => (
                "serviceunavailable",
                format!("Web service limits cannot be checked right now; retry in {retry_after} seconds"),
            ),
        };
        error_response(self.status(), shape, code, &message, retry)
    }
}

/// A call let through: holds its concurrency slot and breaker tickets until it is finished.
/// Dropping it unfinished (a cancelled call) frees the slot and gives up a half-open probe
/// without counting a result.
pub struct Admission {
    metrics: Arc<WebserviceMetrics>,
    tickets: Vec<(Arc<Breaker>, Ticket, Arc<str>)>,
    /// Publishes the breaker changes this call's result makes (shared breaker only).
    sync: Option<BreakerSync>,
    _permit: Option<OwnedSemaphorePermit>,
    function_label: String,
    inflight: bool,
}

impl Admission {
    /// Feeds the breaker(s) and metrics, then releases the slot. `duration`: time to the
    /// response headers (see the module docs).
    pub fn finish(mut self, report: &CallReport, duration: Duration) {
        let now = Instant::now();
        let failed = report.class.counts_as_failure();
        for (breaker, ticket, scope) in std::mem::take(&mut self.tickets) {
            let transition = breaker.record(ticket, failed, duration, now);
            self.metrics.note_transition(&scope, transition);
            publish_transition(self.sync.as_ref(), &scope, transition);
        }
        self.metrics
            .calls
            .with_label_values(&[self.function_label.as_str(), report.class.as_str()])
            .inc();
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for (breaker, ticket, _) in self.tickets.drain(..) {
            if ticket.probe {
                breaker.release_probe();
            }
        }
        if self.inflight {
            self.metrics.inflight.dec();
        }
    }
}

/// Hands a local change to the other replicas (remote changes are never passed here).
fn publish_transition(sync: Option<&BreakerSync>, scope: &Arc<str>, t: Option<Transition>) {
    if let (Some(sync), Some(t)) = (sync, t) {
        sync.changed(scope, t);
    }
}

pub struct Guard {
    extra: Vec<String>,
    policy: Policy,
    limits: RateLimits,
    caps: ConcurrencyCaps,
    breaker: Option<Arc<Breaker>>,
    breaker_settings: Option<BreakerSettings>,
    per_function: Option<Arc<DashMap<String, Arc<Breaker>>>>,
    max_inspect_body: usize,
    metrics: Arc<WebserviceMetrics>,
    /// Rate limits in Redis, shared by replicas (None: `limits` alone decides).
    shared_limits: Option<SharedLimits>,
    /// Publishes breaker changes to the other replicas (None: the breaker stays local).
    sync: Option<BreakerSync>,
}

impl Guard {
    /// A guard whose limits and breaker are shared through `store` when it is Redis (and
    /// `webservice.across_replicas` says so), local otherwise.
    pub fn with_store(
        cfg: &WebserviceConfig,
        metrics: Arc<WebserviceMetrics>,
        store: &Store,
    ) -> Result<Guard, GuardConfigError> {
        let mut guard = Guard::new(cfg, metrics.clone())?;
        let Store::Redis(redis) = store else {
            return Ok(guard);
        };
        let across = &cfg.across_replicas;
        if across.rate_limits == Sharing::Shared && !guard.limits.is_empty() {
            guard.shared_limits = Some(SharedLimits::new(redis.clone(), across, metrics.clone()));
        }
        if across.circuit_breaker == Sharing::Shared {
            if let Some(settings) = guard.breaker_settings.clone() {
                guard.sync = BreakerSync::start(breaker_sync::Shared {
                    store: store.clone(),
                    upstream: guard.breaker.clone(),
                    per_function: guard.per_function.clone(),
                    settings,
                    metrics,
                });
            }
        }
        Ok(guard)
    }

    /// A guard of this replica alone (limits and breaker in memory).
    pub fn new(
        cfg: &WebserviceConfig,
        metrics: Arc<WebserviceMetrics>,
    ) -> Result<Guard, GuardConfigError> {
        for (i, e) in cfg.extra_entry_points.iter().enumerate() {
            if !e.starts_with('/') || e.contains('?') {
                return Err(GuardConfigError {
                    key: format!("webservice.extra_entry_points[{i}]"),
                    message: format!(
                        "must be a path starting with '/' and without a query, not {e:?}"
                    ),
                });
            }
        }
        let policy = Policy::new(&cfg.function_policy, &cfg.token_networks).map_err(|e| {
            GuardConfigError {
                key: e.key,
                message: e.message,
            }
        })?;
        let limits = RateLimits::new(&cfg.rate_limits)
            .map_err(|(key, message)| GuardConfigError { key, message })?;
        let settings = match &cfg.circuit_breaker {
            Some(b) => Some(BreakerSettings::from_config(b).map_err(|m| {
                let (field, message) = m.split_once(": ").unwrap_or(("", m.as_str()));
                GuardConfigError {
                    key: format!("webservice.circuit_breaker.{field}"),
                    message: message.to_owned(),
                }
            })?),
            None => None,
        };
        metrics.set_configured_functions(policy.function_names().chain(limits.function_names()));
        let now = Instant::now();
        let breaker = settings.clone().map(|s| Arc::new(Breaker::new(s, now)));
        if breaker.is_some() {
            metrics
                .breaker_state
                .with_label_values(&[UPSTREAM_SCOPE])
                .set(0);
        }
        let per_function = cfg
            .circuit_breaker
            .as_ref()
            .filter(|b| b.per_function)
            .map(|_| Arc::new(DashMap::new()));
        let max_inspect_body = usize::try_from(cfg.max_inspect_body.bytes()).unwrap_or(usize::MAX);
        Ok(Guard {
            extra: cfg.extra_entry_points.clone(),
            policy,
            limits,
            caps: ConcurrencyCaps::new(cfg.max_concurrent_per_token, cfg.concurrency_wait.get()),
            breaker,
            breaker_settings: settings,
            per_function,
            max_inspect_body,
            metrics,
            shared_limits: None,
            sync: None,
        })
    }

    pub fn entry_kind(&self, path: &str) -> Option<EntryKind> {
        entry::classify(path, &self.extra)
    }

    /// How much of a form body to read for `params::inspect_body`.
    pub fn max_inspect_body(&self) -> usize {
        self.max_inspect_body
    }

    /// Applies policy, rate limits, breaker, then waits for a concurrency slot.
    pub async fn admit(&self, call: &WsCall) -> Result<Admission, Rejection> {
        if !self.policy.is_empty() {
            let entry_path = if self.policy.has_paths() {
                entry::entry_path(&call.path, &self.extra)
            } else {
                None
            };
            if let Err(refusal) = self.policy.check(
                entry_path,
                call.function.as_deref(),
                call.token.as_deref(),
                call.client_ip,
                call.complete,
            ) {
                self.metrics
                    .policy_refusals
                    .with_label_values(&[refusal.as_str()])
                    .inc();
                return Err(Rejection {
                    kind: RejectionKind::Policy(refusal),
                });
            }
        }

        let limited = match &self.shared_limits {
            None => self
                .limits
                .check(call.token.as_ref(), call.function.as_ref(), call.client_ip)
                .map_err(SharedRefusal::Limited),
            Some(shared) => {
                shared
                    .check(
                        &self.limits,
                        call.token.as_ref(),
                        call.function.as_ref(),
                        call.client_ip,
                    )
                    .await
            }
        };
        match limited {
            Ok(()) => {}
            Err(SharedRefusal::Limited(limited)) => {
                self.metrics
                    .rate_limited
                    .with_label_values(&[&*limited.rule])
                    .inc();
                return Err(Rejection {
                    kind: RejectionKind::RateLimited {
                        retry_after: retry_after_secs(limited.retry_after),
                    },
                });
            }
            Err(SharedRefusal::StoreUnavailable(wait)) => {
                return Err(Rejection {
                    kind: RejectionKind::LimitsUnavailable {
                        retry_after: retry_after_secs(wait),
                    },
                });
            }
        }

        let function_label = self
            .metrics
            .function_label(call.function.as_deref())
            .to_owned();
        let mut admission = Admission {
            metrics: self.metrics.clone(),
            tickets: Vec::new(),
            sync: self.sync.clone(),
            _permit: None,
            function_label,
            inflight: false,
        };
        let now = Instant::now();
        if let Some(b) = &self.breaker {
            self.pass_breaker(b, UPSTREAM_SCOPE.into(), now, &mut admission)?;
        }
        if let (Some(map), Some(settings)) = (&self.per_function, &self.breaker_settings) {
            let label = admission.function_label.as_str();
            if label != "other" && label != "none" {
                let existing = map.get(label).map(|b| b.clone());
                let b = match existing {
                    Some(b) => b,
                    None => map
                        .entry(label.to_owned())
                        .or_insert_with(|| Arc::new(Breaker::new(settings.clone(), now)))
                        .clone(),
                };
                let scope: Arc<str> = label.into();
                self.pass_breaker(&b, scope, now, &mut admission)?;
            }
        }

        if self.caps.enabled() {
            if let Some(token) = &call.token {
                match self.caps.acquire(token).await {
                    Ok((permit, wait)) => {
                        if wait == SlotWait::Admitted {
                            self.metrics
                                .concurrency_waits
                                .with_label_values(&["admitted"])
                                .inc();
                        }
                        admission._permit = Some(permit);
                    }
                    Err(()) => {
                        self.metrics
                            .concurrency_waits
                            .with_label_values(&["rejected"])
                            .inc();
                        return Err(Rejection {
                            kind: RejectionKind::Concurrency,
                        });
                    }
                }
            }
        }
        self.metrics.inflight.inc();
        admission.inflight = true;
        Ok(admission)
    }

    fn pass_breaker(
        &self,
        breaker: &Arc<Breaker>,
        scope: Arc<str>,
        now: Instant,
        admission: &mut Admission,
    ) -> Result<(), Rejection> {
        let (result, transition) = breaker.admit(now);
        self.metrics.note_transition(&scope, transition);
        publish_transition(self.sync.as_ref(), &scope, transition);
        match result {
            Ok(ticket) => {
                admission.tickets.push((breaker.clone(), ticket, scope));
                Ok(())
            }
            Err(open) => Err(Rejection {
                kind: RejectionKind::BreakerOpen {
                    retry_after: retry_after_secs(open.retry_after),
                },
            }),
        }
    }

    /// Call every ~60 s: forgets idle rate-limit keys, idle per-token semaphores and idle
    /// per-function breakers, so memory follows current traffic, not all traffic ever seen.
    pub fn housekeeping(&self) {
        self.limits.housekeeping();
        self.caps.prune();
        if let Some(map) = &self.per_function {
            let now = Instant::now();
            map.retain(|_, b| Arc::strong_count(b) > 1 || !b.is_idle(now));
            map.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webservice::outcome::{OutcomeClass, UpstreamFailure};
    use crate::webservice::params::{merge, query_params};
    use http_body_util::BodyExt;

    fn guard(yaml: &str) -> (Guard, Arc<WebserviceMetrics>, prometheus::Registry) {
        let cfg: WebserviceConfig = serde_saphyr::from_str(yaml).unwrap();
        let reg = prometheus::Registry::new();
        let m = Arc::new(WebserviceMetrics::register(&reg).unwrap());
        (Guard::new(&cfg, m.clone()).unwrap(), m, reg)
    }

    fn call(g: &Guard, path_and_query: &str) -> WsCall {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let kind = g.entry_kind(path).unwrap();
        WsCall::new(
            kind,
            path,
            "192.0.2.1".parse().unwrap(),
            merge(kind, &query_params(query), None),
        )
    }

    fn report(class: OutcomeClass) -> CallReport {
        CallReport {
            class,
            exception: None,
            errorcode: None,
            status: Some(200),
            bytes: 0,
            ended_cleanly: true,
        }
    }

    const FAST: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn transient_errors_open_the_breaker_client_faults_do_not() {
        let (g, m, _r) = guard(
            "circuit_breaker: {min_requests: 4, error_rate: 0.5, open_for: 30s}\nmax_concurrent_per_token: 0\n",
        );
        let c = call(
            &g,
            "/webservice/rest/server.php?wstoken=abc&wsfunction=f&moodlewsrestformat=json",
        );
        for _ in 0..10 {
            g.admit(&c)
                .await
                .unwrap()
                .finish(&report(OutcomeClass::ClientFault), FAST);
            g.admit(&c)
                .await
                .unwrap()
                .finish(&report(OutcomeClass::AuthFailure), FAST);
        }
        assert!(g.admit(&c).await.is_ok(), "client faults keep it closed");
        for _ in 0..20 {
            match g.admit(&c).await {
                Ok(a) => a.finish(&report(OutcomeClass::Transient), FAST),
                Err(_) => break,
            }
        }
        let rej = g.admit(&c).await.err().unwrap();
        assert_eq!(rej.reason(), "breaker_open");
        let resp = rej.into_response(&c);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((29..=30).contains(&secs));
        assert_eq!(
            m.breaker_state.with_label_values(&[UPSTREAM_SCOPE]).get(),
            1
        );
        assert_eq!(m.inflight.get(), 0);
    }

    #[tokio::test]
    async fn upstream_failures_and_per_function_scope() {
        let (g, m, _r) =
            guard("circuit_breaker: {min_requests: 2, error_rate: 0.9, per_function: true}\n");
        let bad = call(
            &g,
            "/webservice/rest/server.php?wstoken=abc&wsfunction=mod_broken_x",
        );
        let good = call(
            &g,
            "/webservice/rest/server.php?wstoken=abd&wsfunction=core_ok",
        );
        for _ in 0..2 {
            g.admit(&good)
                .await
                .unwrap()
                .finish(&report(OutcomeClass::Ok), FAST);
        }
        for _ in 0..2 {
            let a = g.admit(&bad).await.unwrap();
            a.finish(
                &CallReport::upstream_failure(UpstreamFailure::Timeout),
                FAST,
            );
        }
        assert!(g.admit(&bad).await.is_err(), "function breaker open");
        assert!(
            g.admit(&good).await.is_ok(),
            "upstream: 2 of 4 failed, below 0.9"
        );
        assert_eq!(
            m.breaker_state.with_label_values(&["mod_broken_x"]).get(),
            1
        );
    }

    #[tokio::test]
    async fn rate_limit_answers_429_in_moodle_shape() {
        let (g, m, _r) = guard("rate_limits: [{key: token, rate: 1/min, burst: 2}]\n");
        let c = call(
            &g,
            "/webservice/rest/server.php?wstoken=0123456789abcdef0123456789abcdef&wsfunction=f",
        );
        g.admit(&c).await.unwrap();
        g.admit(&c).await.unwrap();
        let rej = g.admit(&c).await.err().unwrap();
        let resp = rej.into_response(&c);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "60");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xml"));
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("<ERRORCODE>toomanyrequests</ERRORCODE>"));
        assert!(!text.contains("0123456789abcdef"));
        assert_eq!(m.rate_limited.with_label_values(&["token"]).get(), 1);
    }

    #[tokio::test]
    async fn policy_refusal_is_403() {
        let (g, m, _r) =
            guard("function_policy: [{path: /webservice/rest/server.php, deny: [core_user_*]}]\n");
        let c = call(&g, "/webservice/rest/server.php/x?wstoken=a&wsfunction=CORE_USER_delete_users&moodlewsrestformat=json");
        let rej = g.admit(&c).await.err().unwrap();
        assert_eq!(rej.reason(), "function_denied");
        assert_eq!(rej.into_response(&c).status(), StatusCode::FORBIDDEN);
        assert_eq!(
            m.policy_refusals
                .with_label_values(&["function_denied"])
                .get(),
            1
        );
        let ok = call(
            &g,
            "/webservice/rest/server.php?wsfunction=core_course_get_courses",
        );
        assert!(g.admit(&ok).await.is_ok());
    }

    #[tokio::test]
    async fn concurrency_cap_and_release_on_finish() {
        let (g, m, _r) = guard("max_concurrent_per_token: 1\nconcurrency_wait: 20ms\n");
        let c = call(&g, "/webservice/rest/server.php?wstoken=abc&wsfunction=f");
        let first = g.admit(&c).await.unwrap();
        let rej = g.admit(&c).await.err().unwrap();
        assert_eq!(rej.reason(), "concurrency");
        let resp = rej.into_response(&c);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(m.inflight.get(), 1);
        first.finish(&report(OutcomeClass::Ok), FAST);
        assert_eq!(m.inflight.get(), 0);
        let again = g.admit(&c).await.unwrap();
        drop(again);
        assert!(g.admit(&c).await.is_ok());
        g.housekeeping();
        assert_eq!(
            m.concurrency_waits.with_label_values(&["rejected"]).get(),
            1
        );
        assert_eq!(m.calls.with_label_values(&["f", "ok"]).get(), 1);
    }

    #[test]
    fn futures_and_handles_are_send() {
        fn send<T: Send>(_: &T) {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Guard>();
        send_sync::<WebserviceMetrics>();
        let (g, _m, _r) = guard("{}");
        let c = call(&g, "/webservice/rest/server.php");
        let fut = g.admit(&c);
        send(&fut);
        let inspect = crate::webservice::params::inspect_body(None, crate::body::empty(), 10);
        send(&inspect);
        fn send_static<T: Send + 'static>() {}
        send_static::<Admission>();
        send_static::<crate::webservice::outcome::OutcomeBody>();
    }

    #[test]
    fn config_errors_name_keys() {
        let reg = prometheus::Registry::new();
        let m = Arc::new(WebserviceMetrics::register(&reg).unwrap());
        let cfg: WebserviceConfig =
            serde_saphyr::from_str("circuit_breaker: {error_rate: 1.5}\n").unwrap();
        let err = Guard::new(&cfg, m.clone()).err().unwrap();
        assert_eq!(err.key, "webservice.circuit_breaker.error_rate");
        let cfg: WebserviceConfig = serde_saphyr::from_str(
            "token_networks: [{token_file: /nonexistent/x, networks: [10.0.0.0/8]}]\n",
        )
        .unwrap();
        let err = Guard::new(&cfg, m).err().unwrap();
        assert_eq!(err.key, "webservice.token_networks[0].token_file");
    }
}
