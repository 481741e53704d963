//! The forward stage: send the sanitized request to the upstream over the pooled client, with a
//! timeout on each phase (connect, response head, idle body), and say precisely what failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{request, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use thiserror::Error;

use crate::body::ProxyBody;
use crate::observe::metrics::CoreMetrics;
use crate::proxy::body::BodyFate;
use crate::proxy::client::{UpstreamClient, UpstreamTarget};

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("the upstream exchange failed: {0}")]
    Protocol(String),
    #[error("the request body is larger than allowed")]
    BodyTooLarge,
    #[error("the client stopped sending its body")]
    ClientBodyTimeout,
    #[error("the client went away while sending its body")]
    ClientGone,
    #[error("cannot build the upstream URI: {0}")]
    BadUri(String),
}

impl ForwardError {
    /// The `kind` label of moodle_edge_upstream_errors_total; None for client-side faults.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ForwardError::Connect(_) => Some("connect"),
            ForwardError::Timeout(_) => Some("timeout"),
            ForwardError::Protocol(_) => Some("protocol"),
            _ => None,
        }
    }
}

pub struct Forward<'a> {
    pub client: &'a UpstreamClient,
    pub target: &'a UpstreamTarget,
    pub response_timeout: Duration,
    pub metrics: &'a CoreMetrics,
}

impl Forward<'_> {
    /// Sends the request. `fate` is the request body's guard, when it has a body.
    ///
    /// Also returns how long the upstream took once the whole request had been handed on (or
    /// since the start, when it answered before the body ended): the upstream's own time,
    /// without a slow client's upload in it.
    pub async fn send(
        &self,
        parts: request::Parts,
        body: ProxyBody,
        fate: Option<Arc<BodyFate>>,
    ) -> (Result<Response<Incoming>, ForwardError>, Duration) {
        let started = Instant::now();
        let mut sent_at = None;
        let result = self.exchange(parts, body, fate, &mut sent_at).await;
        (result, sent_at.unwrap_or(started).elapsed())
    }

    async fn exchange(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        fate: Option<Arc<BodyFate>>,
        sent_at: &mut Option<Instant>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = self
            .target
            .uri(path_and_query)
            .map_err(|e| ForwardError::BadUri(e.to_string()))?;
        // The upstream speaks HTTP/1.1 whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        let streaming_body = !body.is_end_stream();
        let request = Request::from_parts(parts, body);

        let started = Instant::now();
        let exchange = self.client.request(request);
        tokio::pin!(exchange);

        // While the client is still uploading, only its own idle timeout applies: a 2 GB upload
        // on a slow line must not hit the response timeout.
        let early = match (&fate, streaming_body) {
            (Some(fate), true) => tokio::select! {
                result = &mut exchange => Some(result),
                _ = fate.ended() => {
                    *sent_at = Some(Instant::now());
                    None
                }
            },
            _ => None,
        };
        let result = match early {
            Some(result) => result,
            None => match tokio::time::timeout(self.response_timeout, &mut exchange).await {
                Ok(result) => result,
                Err(_) => return Err(ForwardError::Timeout(self.response_timeout)),
            },
        };
        match result {
            Ok(response) => {
                self.metrics
                    .upstream_response
                    .observe(started.elapsed().as_secs_f64());
                Ok(response)
            }
            Err(e) => Err(classify(e, fate.as_deref())),
        }
    }
}

fn classify(e: hyper_util::client::legacy::Error, fate: Option<&BodyFate>) -> ForwardError {
    if let Some(fate) = fate {
        if fate.too_large() {
            return ForwardError::BodyTooLarge;
        }
        if fate.timed_out() {
            return ForwardError::ClientBodyTimeout;
        }
        if fate.broken() {
            return ForwardError::ClientGone;
        }
    }
    if e.is_connect() {
        return ForwardError::Connect(error_chain(&e));
    }
    ForwardError::Protocol(error_chain(&e))
}

/// "outer: inner: innermost" — hyper's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
