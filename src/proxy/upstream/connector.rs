//! The pooled upstream client: hyper-util's legacy client (keep-alive pool, idle timeout, cap on
//! idle connections), over a connector that speaks http or https and times every new connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::{BoxError, ProxyBody};
use crate::observe::metrics::CoreMetrics;
use crate::proxy::config::UpstreamConfig;

pub(crate) type UpstreamClient = Client<TimedConnector, ProxyBody>;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("upstream.url: {0}")]
    Url(String),
    #[error("upstream.ca_file: {0}")]
    CaFile(String),
    #[error("upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where requests go: the upstream's scheme and authority, parsed once.
#[derive(Clone, Debug)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl UpstreamTarget {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Url(format!("{url:?}: {e}")))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| ClientError::Url(format!("{url:?} has no scheme")))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| ClientError::Url(format!("{url:?} has no host")))?;
        Ok(UpstreamTarget { scheme, authority })
    }

    /// The upstream URI for a client request's path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// The public web PKI's roots (webpki-roots), for outbound HTTPS that names no CA file.
pub(crate) fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The TLS client config every outbound HTTPS call uses (the upstream, identity providers,
/// metadata, MNet peers, `check --online`): ring, the safe protocol versions, `roots`, no
/// client certificate.
pub(crate) fn client_tls(
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

pub(crate) fn build(
    cfg: &UpstreamConfig,
    metrics: Arc<CoreMetrics>,
) -> Result<(UpstreamClient, UpstreamTarget), ClientError> {
    let target = UpstreamTarget::parse(&cfg.url)?;

    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(cfg.connect_timeout.get()));
    http.set_nodelay(true);
    // The https wrapper decides the scheme; the inner connector must accept https URIs too.
    http.enforce_http(false);

    let mut roots = web_roots();
    if let Some(ca_file) = &cfg.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| ClientError::CaFile(format!("{}: {e}", ca_file.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| ClientError::CaFile(format!("{}: {e}", ca_file.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::CaFile(format!("{}: {e}", ca_file.display())))?;
        }
    }
    let tls = client_tls(roots)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);

    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout.get())
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .build(TimedConnector {
            inner: https,
            metrics,
        });
    Ok((client, target))
}

/// Records how long each new upstream connection took to open.
#[derive(Clone)]
pub(crate) struct TimedConnector {
    inner: HttpsConnector<HttpConnector>,
    metrics: Arc<CoreMetrics>,
}

type Conn = MaybeHttpsStream<TokioIo<TcpStream>>;

impl Service<Uri> for TimedConnector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let conn = connecting.await?;
            metrics
                .upstream_connect
                .observe(started.elapsed().as_secs_f64());
            Ok(conn)
        })
    }
}
