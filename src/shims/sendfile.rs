// TEMPORARY shim with the agreed API until the sendfile module lands.
#[path = "../sendfile/config.rs"]
pub mod config;
use std::sync::Arc;
pub struct SendfileMetrics;
impl SendfileMetrics {
    pub fn register(_r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        Ok(SendfileMetrics)
    }
}
pub struct Offloader;
pub struct Offload {
    pub response: http::Response<crate::body::ProxyBody>,
    pub file: Option<std::path::PathBuf>,
    pub refusal: Option<&'static str>,
}
impl Offloader {
    pub fn new(_cfg: &config::SendfileConfig, _m: Arc<SendfileMetrics>) -> Self {
        Offloader
    }
    pub fn wants_offload(h: &http::HeaderMap) -> bool {
        h.contains_key("x-accel-redirect") || h.contains_key("x-sendfile")
    }
    pub fn is_internal_path(&self, _p: &str) -> bool {
        false
    }
    pub async fn respond(&self, _m: &http::Method, _h: &http::HeaderMap, _u: http::response::Parts) -> Offload {
        Offload { response: http::Response::new(crate::body::empty()), file: None, refusal: Some("shim") }
    }
}
