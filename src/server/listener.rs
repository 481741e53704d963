//! The accept stage: one accept loop per public listener, the connection limit, TLS with SNI
//! and ALPN, the header-read timeout, HTTP/1.1 and HTTP/2, and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::context::ConnInfo;
use crate::pipeline;
use crate::proxy::error_page::{error_response, ErrorStyle};
use crate::server::h2_flood::{self, FloodGuard, FrameBudget};
use crate::server::head_scan::{HeadScan, HeadVerdicts};
use crate::state::SharedState;
use crate::timer::head_clock::{self, HeadClock, TimedIo};

/// Which protocols a connection may speak.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocols {
    Http1,
    Http2,
    /// Plain listener with HTTP/2 on: h1, or h2 with prior knowledge (h2c).
    Auto,
}

/// Everything an accept loop needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Acceptor {
    pub index: usize,
    pub label: String,
    pub shared: SharedState,
    /// One permit per open client connection, across all listeners (`max_connections`).
    pub connections: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    /// Tells open connections to finish their requests and close.
    pub drain: Arc<DrainSignal>,
    /// Tracks connection tasks, so shutdown can wait for them to drain.
    pub tracker: TaskTracker,
}

/// The drain signal for open connections: a flag each connection reads when it wakes up, and a
/// `Notify` that wakes every connection once when the flag is set. A `CancellationToken` would
/// do, but asking it "cancelled yet?" takes a lock, and a connection asks on every wake-up.
#[derive(Default)]
pub(crate) struct DrainSignal {
    flag: AtomicBool,
    notify: Notify,
}

impl DrainSignal {
    pub(crate) fn start(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn started(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Acceptor {
    pub(crate) async fn run(self, listener: TcpListener) {
        loop {
            // Waiting for a permit before accepting leaves extra connections in the kernel
            // backlog instead of accepting and then dropping them.
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = self.shutdown.cancelled() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %self.label, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.shutdown.cancelled() => return,
            };
            let this = self.clone();
            self.tracker.spawn(async move {
                let _permit = permit;
                this.serve(stream, peer).await;
            });
        }
    }

    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let state = self.shared.load_full();
        let core = state.process.core.clone();
        let open = core.connections_open.with_label_values(&[&self.label]);
        core.connections_total
            .with_label_values(&[&self.label])
            .inc();
        open.inc();
        let limits = state.config.server.limits.clone();
        let http2_limits = state.config.server.http2.clone();
        let http2 = state
            .config
            .server
            .listen
            .get(self.index)
            .is_none_or(|l| l.http2);
        let tls = state.tls.get(self.index).cloned().flatten();
        drop(state);

        let result = match tls {
            Some(tls) => {
                let handshake = TlsAcceptor::from(tls).accept(stream);
                match tokio::time::timeout(limits.header_read_timeout.get(), handshake).await {
                    Ok(Ok(tls_stream)) => {
                        let (_, session) = tls_stream.get_ref();
                        let protocols = if session.alpn_protocol() == Some(b"h2") {
                            Protocols::Http2
                        } else {
                            Protocols::Http1
                        };
                        let conn = ConnInfo {
                            peer,
                            peer_value: ConnInfo::ip_value(peer.ip()),
                            tls: true,
                            listener: self.index,
                            head_clock: HeadClock::new(limits.header_read_timeout.get()),
                            response_timer: Default::default(),
                        };
                        self.serve_http(
                            TokioIo::new(tls_stream),
                            conn,
                            protocols,
                            &limits,
                            &http2_limits,
                        )
                        .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        core.tls_handshake_failures
                            .with_label_values(&[&self.label])
                            .inc();
                        Ok(())
                    }
                    Err(_) => {
                        core.tls_handshake_failures
                            .with_label_values(&[&self.label])
                            .inc();
                        Ok(())
                    }
                }
            }
            None => {
                let conn = ConnInfo {
                    peer,
                    peer_value: ConnInfo::ip_value(peer.ip()),
                    tls: false,
                    listener: self.index,
                    head_clock: HeadClock::new(limits.header_read_timeout.get()),
                    response_timer: Default::default(),
                };
                let protocols = if http2 {
                    Protocols::Auto
                } else {
                    Protocols::Http1
                };
                self.serve_http(
                    TokioIo::new(stream),
                    conn,
                    protocols,
                    &limits,
                    &http2_limits,
                )
                .await
            }
        };
        if let Err(reason) = result {
            core.connections_rejected.with_label_values(&[reason]).inc();
        }
        open.dec();
    }

    async fn serve_http<I>(
        &self,
        io: TokioIo<I>,
        conn: ConnInfo,
        protocols: Protocols,
        limits: &crate::server::config::LimitsConfig,
        http2_limits: &crate::server::config::Http2Config,
    ) -> Result<(), &'static str>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // One header-read timer for the connection's life (see head_timeout.rs); HTTP/2 over
        // TLS multiplexes streams on a connection browsers keep open, so it is not timed.
        if matches!(protocols, Protocols::Http2) {
            conn.head_clock.turn_off();
        }
        // Under hyper, so the raw head is seen before hyper drops a Content-Length (head_scan.rs).
        let verdicts = Arc::new(HeadVerdicts::default());
        let budget = FrameBudget::new(
            http2_limits.max_control_frames,
            !matches!(protocols, Protocols::Http1),
        );
        let guarded = FloodGuard::new(io.into_inner(), budget);
        let scanned = HeadScan::new(
            guarded,
            verdicts.clone(),
            !matches!(protocols, Protocols::Http2),
        );
        let io = TimedIo::new(TokioIo::new(scanned), conn.head_clock.clone());
        let conn = Arc::new(conn);
        let shared = self.shared.clone();
        let max_header = limits.max_header_size.bytes().min(u32::MAX as u64) as usize;
        // hyper answers 431 itself when a head does not fit its read buffer, which is sized to
        // `max_header_size` but cannot go below 8 KiB; a smaller limit (4 KiB is allowed) is
        // enforced here, by measuring each head.
        let measure_heads = max_header < HYPER_MIN_BUF;
        let service = service_fn(move |req: Request<Incoming>| {
            let state = shared.load_full();
            let refused = if verdicts.next_request_conflicts() {
                Some(framing_conflict(&state))
            } else if measure_heads && head_size(&req) > max_header {
                Some(header_too_large(&state))
            } else {
                None
            };
            match refused {
                Some(response) => Serve::Refused {
                    response: Some(response),
                },
                None => Serve::Pipeline {
                    fut: pipeline::handle(state, conn.clone(), req),
                },
            }
        });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Enforced by TimedIo with one timer per connection, not one per request.
            .header_read_timeout(None)
            // Bounds both the header (431 beyond it) and what one slow reader can queue.
            .max_buf_size(max_header.max(HYPER_MIN_BUF))
            // A client may shut its side down after sending a request and still wait for the
            // answer (as nginx allows); without this hyper closes on that EOF.
            .half_close(true)
            .keep_alive(true);
        let h2 = http2_limits;
        let header_list = h2
            .max_header_list_size
            .map_or(max_header as u64, |s| s.bytes());
        let ping = h2.keep_alive_interval.get();
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(header_list.min(u64::from(u32::MAX)) as u32)
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(h2.max_local_error_reset_streams)
            .initial_stream_window_size(window(h2.initial_stream_window))
            .initial_connection_window_size(window(h2.initial_connection_window))
            .max_send_buf_size(h2.max_send_buf_size.bytes().min(usize::MAX as u64) as usize)
            .keep_alive_interval((!ping.is_zero()).then_some(ping))
            .keep_alive_timeout(h2.keep_alive_timeout.get());
        let builder = match protocols {
            Protocols::Http1 => builder.http1_only(),
            Protocols::Http2 => builder.http2_only(),
            Protocols::Auto => builder,
        };
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        // The connection is what wakes this task, many times per request. The drain signal is
        // polled once, which leaves this task's waker with it; after that a wake-up only reads
        // its flag.
        let notified = self.drain.notify.notified();
        tokio::pin!(notified);
        let mut registered = false;
        let finished = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = connection.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if !registered {
                registered = true;
                let _ = notified.as_mut().poll(cx);
            }
            if self.drain.started() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        let result = match finished {
            Some(r) => r,
            None => {
                // Finish the requests in flight, then close; idle connections close now.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = classify_connection_error(e.as_ref());
                tracing::debug!(reason, error = %e, "client connection ended with an error");
                Err(reason)
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future: a refusal found before the pipeline, or the pipeline's own future.
    /// Not an async block around the pipeline: that would be as large again, and hyper copies
    /// the service's future once per request.
    #[project = ServeProj]
    enum Serve<F> {
        Refused { response: Option<Response<ProxyBody>> },
        Pipeline { #[pin] fut: F },
    }
}

impl<F> Future for Serve<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // Polled once: hyper never polls a finished future again.
            ServeProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Response::new(crate::body::empty())))),
            ServeProj::Pipeline { fut } => fut.poll(cx),
        }
    }
}

/// A flow-control window in the u32 hyper takes (the config check keeps it below 2^31).
fn window(size: crate::config::units::Size) -> u32 {
    size.bytes().min(u64::from(u32::MAX >> 1)) as u32
}

/// The smallest read buffer hyper's HTTP/1 server accepts (`max_buf_size`).
const HYPER_MIN_BUF: usize = 8 * 1024;

/// The size of a request head as it came on the wire (request line, header lines, blank line);
/// exact for HTTP/1.1 up to optional whitespace.
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len() + 1 + uri_len(req.uri()) + 11;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

/// The length of the URI as written (`scheme://authority` when absolute, then path and query),
/// without formatting it: this runs for every request.
fn uri_len(uri: &http::Uri) -> usize {
    let prefix = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => scheme.len() + 3 + authority.as_str().len(),
        (None, Some(authority)) => authority.as_str().len(),
        _ => 0,
    };
    let rest = match uri.path_and_query() {
        Some(pq) => pq.as_str().len(),
        None if prefix > 0 => 0,
        None => 1,
    };
    prefix + rest
}

fn header_too_large(state: &crate::state::State) -> Response<ProxyBody> {
    state
        .process
        .core
        .rejected_requests
        .with_label_values(&["header_too_large"])
        .inc();
    let mut resp = error_response(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorStyle::Html,
        "The request headers are larger than this site accepts.",
        "",
    );
    // The request body, if any, was not read: the connection cannot carry another request.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A head with both Content-Length and Transfer-Encoding: refused, as nginx and Envoy do,
/// and the connection closed (its body's end is not known for sure).
fn framing_conflict(state: &crate::state::State) -> Response<ProxyBody> {
    state
        .process
        .core
        .rejected_requests
        .with_label_values(&["smuggling"])
        .inc();
    let mut resp = error_response(
        StatusCode::BAD_REQUEST,
        ErrorStyle::Html,
        "The request has both Content-Length and Transfer-Encoding.",
        "",
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn classify_connection_error(e: &(dyn std::error::Error + 'static)) -> &'static str {
    if head_clock::is_head_timeout(e) {
        return "header_timeout";
    }
    if h2_flood::is_flood(e) {
        return "h2_flood";
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_timeout() {
            return "header_timeout";
        }
        if h.is_parse() || h.is_parse_status() {
            return "protocol";
        }
        if h.is_incomplete_message() {
            return "incomplete";
        }
    }
    "io"
}

#[cfg(test)]
mod tests {
    use super::uri_len;

    #[test]
    fn uri_len_matches_the_written_form() {
        for text in [
            "/",
            "/course/view.php?id=2",
            "http://lms.example:8080/a?b=c",
            "https://lms.example/",
            "lms.example:443",
            "*",
        ] {
            let uri: http::Uri = text.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{text}");
        }
    }
}
