//! hyper's pooled client: requests with a body, upgrades and https:// upstreams. It streams a
//! body both ways at once, which the direct path does not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{request, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;

use super::connector::{UpstreamClient, UpstreamTarget};
use super::error::{classify, ForwardError, Timing};
use crate::body::ProxyBody;
use crate::proxy::body::BodyFate;
use crate::proxy::headers::ForwardHeaders;

pub(super) struct Pooled {
    pub(super) client: UpstreamClient,
    pub(super) target: UpstreamTarget,
}

impl Pooled {
    /// Sends the request. `fate` is the request body's guard, when it has a body.
    ///
    /// Also returns how long the exchange took up to the response head, and how long the
    /// upstream took once the whole request had been handed on (or since the start, when it
    /// answered before the body ended): the upstream's own time, without a slow client's upload
    /// in it. The clock is read twice for a request without a body.
    pub(super) async fn send(
        &self,
        mut parts: request::Parts,
        added: &ForwardHeaders,
        body: ProxyBody,
        fate: Option<Arc<BodyFate>>,
        response_timeout: Duration,
    ) -> (Result<Response<Incoming>, ForwardError>, Timing) {
        added.insert_into(&mut parts.headers);
        let started = Instant::now();
        let mut sent_at = None;
        let result = self
            .exchange(parts, body, fate, response_timeout, &mut sent_at)
            .await;
        let ended = Instant::now();
        let total = ended.saturating_duration_since(started);
        let timing = Timing {
            total,
            upstream: ended.saturating_duration_since(sent_at.unwrap_or(started)),
            ended,
        };
        (result, timing)
    }

    async fn exchange(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        fate: Option<Arc<BodyFate>>,
        response_timeout: Duration,
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
            None => match tokio::time::timeout(response_timeout, &mut exchange).await {
                Ok(result) => result,
                Err(_) => return Err(ForwardError::Timeout(response_timeout)),
            },
        };
        result.map_err(|e| classify(e, fate.as_deref()))
    }
}
