//! Where the IdP metadata comes from: a file (read at build, so a bad file is a config error)
//! or an http(s) URL (fetched in the background, so start-up never waits on the network). The
//! provider (`provider`) reads its source again every `saml.idp_metadata_refresh`; a reading
//! that fails (unreachable, bad signature, no signing key) keeps the last good metadata and is
//! logged.

use crate::proxy::upstream::connector::{client_tls, web_roots};
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest metadata document accepted (federation aggregates run to a few MiB).
const MAX_METADATA: usize = 32 * 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetadataSource {
    File(PathBuf),
    Url(String),
}

impl MetadataSource {
    /// Reads the metadata text.
    pub(crate) async fn read(&self) -> Result<String, String> {
        match self {
            MetadataSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            MetadataSource::Url(url) => tokio::time::timeout(FETCH_TIMEOUT, fetch(url))
                .await
                .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?,
        }
    }
}

async fn fetch(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let tls = client_tls(web_roots()).map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<bytes::Bytes>>(https);
    let resp = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_METADATA)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: the metadata is not UTF-8"))
}
