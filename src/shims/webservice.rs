// TEMPORARY shim with the agreed API until the webservice module lands.
#[path = "../webservice/config.rs"]
pub mod config;
#[path = "../webservice/entry.rs"]
pub mod entry;
use std::sync::Arc;
pub struct WebserviceMetrics;
impl WebserviceMetrics {
    pub fn register(_r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        Ok(WebserviceMetrics)
    }
}
#[derive(Debug, thiserror::Error)]
#[error("shim")]
pub struct GuardConfigError;
pub struct Guard { extra: Vec<String> }
pub enum WsFormat { Json, Xml }
pub struct WsCall { pub entry: entry::EntryKind, pub path: String, pub token: Option<String>, pub function: Option<String>, pub format: WsFormat, pub client_ip: std::net::IpAddr }
pub struct Admission;
pub struct Rejection;
pub struct CallReport;
impl Admission { pub fn finish(self, _r: &CallReport, _d: std::time::Duration) {} }
impl Rejection {
    pub fn into_response(self, _c: &WsCall) -> http::Response<crate::body::ProxyBody> { http::Response::new(crate::body::empty()) }
    pub fn reason(&self) -> &'static str { "shim" }
}
impl Guard {
    pub fn new(cfg: &config::WebserviceConfig, _m: Arc<WebserviceMetrics>) -> Result<Guard, GuardConfigError> { Ok(Guard { extra: cfg.extra_entry_points.clone() }) }
    pub fn entry_kind(&self, path: &str) -> Option<entry::EntryKind> { entry::classify(path, &self.extra) }
    pub async fn admit(&self, _c: &WsCall) -> Result<Admission, Rejection> { Ok(Admission) }
    pub fn housekeeping(&self) {}
}
pub mod stage {
    use crate::body::ProxyBody;
    use crate::pipeline::RequestContext;
    use crate::state::State;
    pub struct WsAdmitted;
    impl WsAdmitted {
        pub fn upstream_failed(self, _s: &State, _c: &RequestContext, _e: &crate::proxy::forward::ForwardError, _st: http::StatusCode) {}
        pub fn watch_response(self, _s: &State, _c: &RequestContext, r: http::Response<ProxyBody>) -> http::Response<ProxyBody> { r }
    }
    pub async fn guard(_s: &State, _c: &mut RequestContext, _e: super::entry::EntryKind, _p: &http::request::Parts, body: ProxyBody) -> Result<(ProxyBody, WsAdmitted), http::Response<ProxyBody>> {
        Ok((body, WsAdmitted))
    }
}
