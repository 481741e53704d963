//! The forward stage: send the sanitized request to the upstream, with a timeout on each phase
//! (connect, response head, idle body), and say precisely what failed.
//!
//! Two paths lead there. Requests without a body (most page views, every file download) to an
//! http:// upstream take the direct path (src/proxy/direct.rs); uploads, upgrades and https://
//! upstreams take hyper's pooled client, which streams a body both ways at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{request, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use thiserror::Error;

use crate::body::{BoxError, ProxyBody};
use crate::observe::metrics::CoreMetrics;
use crate::proxy::body::BodyFate;
use crate::proxy::client::{UpstreamClient, UpstreamTarget};
use crate::proxy::direct::{DirectBody, DirectError, DirectPool};
use crate::proxy::headers::ForwardHeaders;
use crate::timer::LaterSleep;

/// The upstream's response body, from whichever path carried the request.
pub enum UpstreamBody {
    Pooled(Incoming),
    Direct(DirectBody),
}

impl UpstreamBody {
    /// True when the body is already in memory to its end, so it can never stall.
    pub fn cannot_stall(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_buffered_to_end(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Direct(b) => b.size_hint(),
        }
    }
}

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

/// How long an exchange took, up to the response head.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From handing the request on to the response head.
    pub total: Duration,
    /// The upstream's share: from the end of the request body to the response head.
    pub upstream: Duration,
    /// When the response head (or the failure) came.
    pub ended: Instant,
}

/// A connection's reusable upstream response timer. An HTTP/1.1 connection carries one request
/// at a time, and each request's deadline is later than the last, so one [`LaterSleep`]
/// serves all of them (see src/timer.rs), where `tokio::time::timeout` would register and
/// cancel a timer per request. A request that finds it taken (HTTP/2 streams in parallel)
/// uses one of its own.
#[derive(Default)]
pub struct ResponseTimer(std::sync::Mutex<Option<Box<LaterSleep>>>);

impl std::fmt::Debug for ResponseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseTimer")
    }
}

impl ResponseTimer {
    /// Runs `exchange` with a deadline; the output is None when the deadline passed first.
    ///
    /// A plain future rather than an `async fn`: an async fn would keep `exchange` twice (as
    /// its argument and as the pinned local it polls) plus a fallback `Timeout` around it, and
    /// every request's future carries this one.
    fn run<F: Future>(&self, deadline: Instant, exchange: F) -> Deadline<'_, F> {
        // The slot is lent to the request and comes back when its future is dropped; the lock
        // is held for the loan and the return only, never across an await.
        let slot = self.0.lock().ok().and_then(|mut slot| slot.take());
        Deadline {
            exchange,
            owner: self,
            slot,
            deadline: tokio::time::Instant::from_std(deadline),
        }
    }

    fn give_back(&self, slot: Box<LaterSleep>) {
        if let Ok(mut held) = self.0.lock() {
            if held.is_none() {
                *held = Some(slot);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `exchange`, or None once the deadline has passed.
    struct Deadline<'a, F> {
        #[pin]
        exchange: F,
        owner: &'a ResponseTimer,
        // The connection's sleep while this request has it; a sleep of its own when it was
        // taken (made on the first wait).
        slot: Option<Box<LaterSleep>>,
        deadline: tokio::time::Instant,
    }

    impl<'a, F> PinnedDrop for Deadline<'a, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(slot) = this.slot.take() {
                this.owner.give_back(slot);
            }
        }
    }
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The exchange first: an answer that is ready counts even at the deadline.
        if let Poll::Ready(out) = this.exchange.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let deadline = *this.deadline;
        let slot = this
            .slot
            .get_or_insert_with(|| Box::new(LaterSleep::new(deadline)));
        match slot.poll_until(deadline, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(None),
        }
    }
}

pub struct Forward<'a> {
    pub client: &'a UpstreamClient,
    /// The connection's response timer, for the direct path.
    pub timer: &'a ResponseTimer,
    pub target: &'a UpstreamTarget,
    pub response_timeout: Duration,
    pub metrics: &'a CoreMetrics,
}

impl Forward<'_> {
    /// Sends a request without a body (and without an upgrade) over the direct path
    /// (src/proxy/direct.rs). The request is borrowed, not moved: the respond stage still reads
    /// its precondition headers when the answer is an offload, and the request future stays
    /// small. The response timeout covers the connect too, as it does on the pooled path.
    ///
    /// `started` is the request's arrival: the proxy's own work before this call (a
    /// microsecond or so) counts as the exchange's, which saves a read of the clock.
    pub async fn send_direct(
        &self,
        direct: &Arc<DirectPool>,
        parts: &request::Parts,
        added: &ForwardHeaders,
        started: Instant,
    ) -> (Result<Response<UpstreamBody>, ForwardError>, Timing) {
        let deadline = started + self.response_timeout;
        let result = match self
            .timer
            .run(deadline, direct.send(parts, Some(added), started))
            .await
        {
            None => Err(ForwardError::Timeout(self.response_timeout)),
            Some(Err(e)) => Err(classify_direct(&e)),
            Some(Ok(response)) => Ok(response.map(UpstreamBody::Direct)),
        };
        let ended = Instant::now();
        let total = ended.saturating_duration_since(started);
        if result.is_ok() {
            self.metrics.upstream_response.observe(total.as_secs_f64());
        }
        // Nothing to upload: the upstream's share is all of it.
        (
            result,
            Timing {
                total,
                upstream: total,
                ended,
            },
        )
    }

    /// Sends the request over hyper's pooled client (requests with a body, upgrades, https
    /// upstreams). `fate` is the request body's guard, when it has a body.
    ///
    /// Also returns how long the exchange took up to the response head, and how long the
    /// upstream took once the whole request had been handed on (or since the start, when it
    /// answered before the body ended): the upstream's own time, without a slow client's upload
    /// in it. The clock is read twice for a request without a body.
    pub async fn send(
        &self,
        mut parts: request::Parts,
        added: &ForwardHeaders,
        body: ProxyBody,
        fate: Option<Arc<BodyFate>>,
    ) -> (Result<Response<UpstreamBody>, ForwardError>, Timing) {
        added.insert_into(&mut parts.headers);
        let started = Instant::now();
        let mut sent_at = None;
        let result = self.exchange(parts, body, fate, &mut sent_at).await;
        let ended = Instant::now();
        let total = ended.saturating_duration_since(started);
        if result.is_ok() {
            self.metrics.upstream_response.observe(total.as_secs_f64());
        }
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
        sent_at: &mut Option<Instant>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
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
            None => match tokio::time::timeout(self.response_timeout, &mut exchange).await {
                Ok(result) => result,
                Err(_) => return Err(ForwardError::Timeout(self.response_timeout)),
            },
        };
        match result {
            Ok(response) => Ok(response.map(UpstreamBody::Pooled)),
            Err(e) => Err(classify(e, fate.as_deref())),
        }
    }
}

fn classify_direct(e: &DirectError) -> ForwardError {
    if e.is_connect() {
        ForwardError::Connect(error_chain(e))
    } else {
        ForwardError::Protocol(error_chain(e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paused test clock's now (std's clock does not move with it).
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_times_out_and_serves_the_next_request() {
        let timer = ResponseTimer::default();
        // An answer in time.
        let quick = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            })
            .await;
        assert_eq!(quick, Some(7));
        // Too slow: the deadline wins.
        let started = tokio::time::Instant::now();
        let slow = timer
            .run(now() + Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
            .await;
        assert_eq!(slow, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // After a timeout the timer still serves the next request with its new deadline.
        let again = timer
            .run(now() + Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                8
            })
            .await;
        assert_eq!(again, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_armed_for_an_earlier_deadline_moves_on_to_the_current_one() {
        let timer = ResponseTimer::default();
        // The first request arms the sleep for t=10 s and is answered at t=1 s.
        let first = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                1
            })
            .await;
        assert_eq!(first, Some(1));
        // The second one's deadline is t=11 s: the sleep fires at t=10 s for the first's,
        // which must not end this one; it ends at its own deadline.
        let started = tokio::time::Instant::now();
        let second = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
            .await;
        assert_eq!(second, None);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // Many quick requests in a row leave it working.
        for i in 0..100 {
            let quick = timer
                .run(now() + Duration::from_secs(3), async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    i
                })
                .await;
            assert_eq!(quick, Some(i));
        }
        let started = tokio::time::Instant::now();
        let late = timer
            .run(now() + Duration::from_secs(3), std::future::pending::<()>())
            .await;
        assert_eq!(late, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_requests_each_get_their_deadline() {
        let timer = ResponseTimer::default();
        let deadline = now() + Duration::from_secs(5);
        let (a, b) = tokio::join!(
            timer.run(deadline, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
            timer.run(deadline, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
        );
        assert_eq!((a, b), (None, None));
    }
}
