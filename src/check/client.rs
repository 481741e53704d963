//! The online check's own HTTP client to the upstream: hyper-util's client over rustls with
//! the Mozilla roots plus `upstream.ca_file`, as the proxy trusts them. Its own, not the
//! proxy's pooled upstream, so the check needs nothing from the running pipeline and can send
//! a POST body (the token) as a browser would.

use crate::proxy::upstream::connector::{client_tls, web_roots};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::proxy::config::UpstreamConfig;

pub(super) type CheckClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(super) fn build(cfg: &UpstreamConfig) -> Result<CheckClient, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(cfg.connect_timeout.get()));
    http.enforce_http(false);
    let mut roots = web_roots();
    if let Some(ca_file) = &cfg.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| format!("upstream.ca_file: cannot read {}: {e}", ca_file.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("upstream.ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("upstream.ca_file: {e}"))?;
        }
    }
    let tls = client_tls(roots).map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}
