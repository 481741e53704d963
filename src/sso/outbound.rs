//! The SSO module's own outbound HTTP client: control calls to identity providers (discovery,
//! token, JWKS, userinfo) and to Moodle's web service (the hand-off). Separate from the proxy's
//! upstream client because these are the edge's own requests, with their own small timeout and
//! body limit, and never follow redirects (the OIDC crate requires that of its client).

use crate::proxy::upstream::connector::{client_tls, web_roots};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;

/// Larger answers (a JWKS, discovery, a userinfo) are refused: these are small documents.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub(crate) enum HttpError {
    #[error("request failed: {0}")]
    Send(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer body: {0}")]
    Body(String),
}

/// A pooled http/https client with a whole-exchange timeout.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration) -> Result<HttpClient, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let tls = client_tls(web_roots())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpClient { client, timeout })
    }

    /// Sends the request and reads the whole answer (at most 1 MiB).
    pub(crate) async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Send(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(Response::from_parts(parts, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}
