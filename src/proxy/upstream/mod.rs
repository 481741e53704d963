//! The one way to the upstream. The pipeline and the health probe call [`Upstream`]; which
//! client carries a request is decided here, and what comes out is the same normalised answer
//! either way (see `response`).
//!
//! Two clients: requests without a body (most page views, every file download) to an http://
//! upstream take the direct path (`direct/`), spoken in the request's own task; uploads,
//! upgrades and https:// upstreams take hyper's pooled client (`pooled`). Both apply the
//! forwarding headers and the stages' header changes, and both time every phase.

pub(crate) mod connector;
pub mod direct;
pub(crate) mod error;
mod pooled;
mod response;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::body::request::RequestBody;
use crate::context::UpstreamHeaders;
use crate::observe::metrics::CoreMetrics;
use crate::proxy::config::UpstreamConfig;
use crate::proxy::headers::{self, ForwardHeaders};
use crate::proxy::upgrade;
use crate::timer::response_timer::ResponseTimer;

pub(crate) use connector::{ClientError, UpstreamTarget};
pub(crate) use direct::{recycle_header_map, DirectPool};
pub(crate) use error::{ForwardError, Timing};
pub(crate) use response::UpstreamBody;

use connector::UpstreamClient;
use error::classify_direct;
use pooled::Pooled;

/// The upstream Moodle web server and the clients that reach it.
pub struct Upstream {
    pooled: Pooled,
    /// The direct path for bodiless requests to an http:// upstream (None when
    /// `upstream.direct` is off or the upstream is https://).
    direct: Option<Arc<DirectPool>>,
    response_timeout: Duration,
    metrics: Arc<CoreMetrics>,
}

/// One request on its way upstream. Its head and body are lent, not given: the direct path
/// only reads them, so nothing of the request moves for most requests; the pooled client takes
/// them and leaves the [`keep_headers`](Self::keep_headers) behind in `parts`.
pub struct UpstreamRequest<'a> {
    /// The request head. After [`Upstream::send`] it still holds the method and at least the
    /// `keep_headers` (the direct path leaves it whole).
    pub parts: &'a mut request::Parts,
    /// Taken only when it goes the pooled way (a body to send).
    pub body: &'a mut RequestBody,
    /// X-Forwarded-*, X-Real-IP, X-Request-Id (from the sanitize stage).
    pub forward: &'a ForwardHeaders,
    /// What the stages want set or removed (identity headers, a replaced body's framing).
    pub changes: &'a UpstreamHeaders,
    /// The client's side of an Upgrade handshake (WebSocket), when it asked for one.
    pub on_upgrade: Option<OnUpgrade>,
    /// Request headers the caller still needs once the request has gone (the offload's
    /// preconditions).
    pub keep_headers: &'static [HeaderName],
    /// When the request arrived: the direct path's exchange starts then (one clock read fewer).
    pub started: Instant,
}

/// What came back.
pub struct Exchange {
    pub result: Result<Response<UpstreamBody>, ForwardError>,
    pub timing: Timing,
}

impl Upstream {
    pub fn build(cfg: &UpstreamConfig, metrics: Arc<CoreMetrics>) -> Result<Self, ClientError> {
        let (client, target): (UpstreamClient, UpstreamTarget) =
            connector::build(cfg, metrics.clone())?;
        let direct = (cfg.direct && target.scheme == http::uri::Scheme::HTTP).then(|| {
            Arc::new(DirectPool::new(
                &target.authority,
                cfg.pool_max_idle_per_host,
                cfg.pool_idle_timeout.get(),
                cfg.connect_timeout.get(),
                Some(metrics.clone()),
            ))
        });
        Ok(Upstream {
            pooled: Pooled { client, target },
            direct,
            response_timeout: cfg.response_timeout.get(),
            metrics,
        })
    }

    pub fn target(&self) -> &UpstreamTarget {
        &self.pooled.target
    }

    /// Sends a request and waits for the answer's head, within `upstream.response_timeout`
    /// (the connect included). `timer` is the connection's reusable response timer.
    pub async fn send(&self, timer: &ResponseTimer, request: UpstreamRequest<'_>) -> Exchange {
        let UpstreamRequest {
            parts,
            body,
            forward,
            changes,
            on_upgrade,
            keep_headers,
            started,
        } = request;
        if !changes.is_empty() {
            changes.apply(&mut parts.headers);
        }
        if let Some(len) = body.replaced_len() {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let direct = self
            .direct
            .as_ref()
            .filter(|_| body.is_end_stream() && on_upgrade.is_none());
        let exchange = match direct {
            // The request is only lent to the direct path: it stays where it is.
            Some(direct) => {
                self.send_direct(timer, direct, parts, forward, started)
                    .await
            }
            None => {
                let taken = std::mem::replace(parts, spent_parts(parts, keep_headers));
                let (body, fate) = body.take().into_upstream();
                // Boxed: the pooled client's future is large, and would otherwise grow every
                // request's future, most of which take the direct path.
                let (result, timing) =
                    Box::pin(
                        self.pooled
                            .send(taken, forward, body, fate, self.response_timeout),
                    )
                    .await;
                Exchange {
                    result: result.and_then(|r| finish_pooled(r, on_upgrade)),
                    timing,
                }
            }
        };
        if exchange.result.is_ok() {
            self.metrics
                .upstream_response
                .observe(exchange.timing.total.as_secs_f64());
        }
        exchange
    }

    /// The direct path, under the connection's response timer. The proxy's own work before
    /// this call (a microsecond or so) counts as the exchange's, which saves a clock read.
    async fn send_direct(
        &self,
        timer: &ResponseTimer,
        direct: &Arc<DirectPool>,
        parts: &request::Parts,
        added: &ForwardHeaders,
        started: Instant,
    ) -> Exchange {
        let deadline = started + self.response_timeout;
        let result = match timer
            .run(deadline, direct.send(parts, Some(added), started))
            .await
        {
            None => Err(ForwardError::Timeout(self.response_timeout)),
            Some(Err(e)) => Err(classify_direct(&e)),
            Some(Ok(mut response)) => {
                response::normalise_version(&mut response);
                Ok(response.map(UpstreamBody::Direct))
            }
        };
        let ended = Instant::now();
        let total = ended.saturating_duration_since(started);
        // Nothing to upload: the upstream's share is all of it.
        Exchange {
            result,
            timing: Timing {
                total,
                upstream: total,
                ended,
            },
        }
    }

    /// A health probe: `parts` sent the way a page view goes (sharing its pool rather than
    /// holding a connection of its own), with no forwarding headers.
    pub async fn probe(&self, parts: request::Parts) -> Result<Response<UpstreamBody>, String> {
        match &self.direct {
            Some(direct) => direct
                .send(&parts, None, Instant::now())
                .await
                .map(|r| r.map(UpstreamBody::Direct))
                .map_err(|e| e.to_string()),
            None => {
                let mut parts = parts;
                parts.uri = self
                    .pooled
                    .target
                    .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
                    .map_err(|e| e.to_string())?;
                self.pooled
                    .client
                    .request(http::Request::from_parts(parts, crate::body::empty()))
                    .await
                    .map(|r| r.map(UpstreamBody::Pooled))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Lets go of idle direct-path connections the upstream closed (housekeeping).
    pub fn reap(&self) -> usize {
        self.direct.as_ref().map_or(0, |d| d.reap())
    }
}

/// A pooled answer made like a direct one: a 101 the client asked for joins the two upgraded
/// connections (the answer then has no body of its own); one it did not ask for is refused.
fn finish_pooled(
    mut response: Response<hyper::body::Incoming>,
    on_upgrade: Option<OnUpgrade>,
) -> Result<Response<UpstreamBody>, ForwardError> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = on_upgrade else {
            return Err(ForwardError::UnexpectedSwitch);
        };
        upgrade::join(client, hyper::upgrade::on(&mut response));
        let (mut parts, _) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Ok(Response::from_parts(parts, UpstreamBody::Empty));
    }
    response::normalise_pooled(&mut response)
        .map_err(|why| ForwardError::Protocol(why.to_string()))?;
    Ok(response.map(UpstreamBody::Pooled))
}

/// What a request head leaves behind when the pooled client takes it: the method and the
/// headers named in `keep` (one pass with cheap name comparisons, since most requests carry
/// none of them).
fn spent_parts(from: &request::Parts, keep: &[HeaderName]) -> request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = from.method.clone();
    for (name, value) in from.headers.iter() {
        if keep.contains(name) {
            parts.headers.append(name.clone(), value.clone());
        }
    }
    parts
}
