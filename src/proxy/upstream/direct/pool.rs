//! The pool of idle keep-alive connections and one request/response exchange on a connection,
//! with the single retry a stale pooled connection allows.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::header::HeaderValue;
use http::{request, Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::DirectBody;
use super::encode::encode_head;
use super::head::{build_parts, framing, parse_head, Framing};
use super::idle::IdleConns;
use super::names::NameCache;
use super::{Conn, DirectError, MAX_HEAD, READ_CHUNK};
use crate::observe::metrics::CoreMetrics;
use crate::proxy::headers::ForwardHeaders;

/// The pool of idle keep-alive connections to one plain-http upstream, most recently used first
/// out (it is the one least likely to have been closed by the upstream's keep-alive timeout).
pub struct DirectPool {
    addr: String,
    authority: HeaderValue,
    /// The idle connections, shared with the bodies that give theirs back.
    idle: Arc<IdleConns>,
    connect_timeout: Duration,
    metrics: Option<Arc<CoreMetrics>>,
}

impl DirectPool {
    /// `authority` is the upstream's host:port; it is also the Host sent when a request has none.
    pub fn new(
        authority: &http::uri::Authority,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        metrics: Option<Arc<CoreMetrics>>,
    ) -> Self {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.host()),
        };
        DirectPool {
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            addr,
            idle: Arc::new(IdleConns::new(max_idle, idle_timeout)),
            connect_timeout,
            metrics,
        }
    }

    /// Sends a bodiless request and reads the response head. The body reads the same
    /// connection, which returns here when the body has been read to its end.
    /// `added` are the headers the proxy adds (X-Forwarded-*, X-Request-Id), written after the
    /// request's own.
    ///
    /// `now` is the caller's reading of the clock, taken just before (it ages the pooled
    /// connections; one clock read fewer per request).
    pub async fn send(
        self: &Arc<Self>,
        parts: &request::Parts,
        added: Option<&ForwardHeaders>,
        now: Instant,
    ) -> Result<Response<DirectBody>, DirectError> {
        let head = encode_head(parts, added, &self.authority);
        let is_head = parts.method == Method::HEAD;
        // A reused connection may have been closed by the upstream a moment ago; a request that
        // never got an answer on it is tried once more on a new connection if resending it is
        // safe (RFC 9110 §9.2.2), as nginx's proxy_next_upstream does.
        let mut may_retry = true;
        loop {
            // The second try always opens a new connection: after an upstream restart every
            // pooled one may be dead.
            let pooled = if may_retry {
                self.idle.checkout(now)
            } else {
                None
            };
            let (mut conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: a new connection is the rare case, and its future would otherwise
                // grow every request's.
                None => (Box::pin(self.connect()).await?, false),
            };
            match exchange(&mut conn, &head, is_head).await {
                Ok((parts, framing, keep_alive)) => {
                    let mut body = DirectBody {
                        conn: Some(conn),
                        pool: self.idle.clone(),
                        framing,
                        keep_alive,
                    };
                    // Read whole with its head: the connection is idle again, and is aged from
                    // the request's start rather than by another clock read (a connection is
                    // retired a request's duration early at worst, never late).
                    body.finish_if_done(Some(now));
                    return Ok(Response::from_parts(parts, body));
                }
                Err(Exchange::Stale { written }) if reused && may_retry => {
                    if written && !is_idempotent(&parts.method) {
                        return Err(DirectError::ClosedBeforeAnswer);
                    }
                    may_retry = false;
                    if let Some(m) = &self.metrics {
                        m.upstream_retries.inc();
                    }
                }
                Err(Exchange::Stale { .. }) => return Err(DirectError::ClosedBeforeAnswer),
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, DirectError> {
        let started = Instant::now();
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
        {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => {
                return Err(DirectError::Connect {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(DirectError::ConnectTimeout {
                    addr: self.addr.clone(),
                    timeout: self.connect_timeout,
                })
            }
        };
        io.set_nodelay(true)?;
        if let Some(m) = &self.metrics {
            m.upstream_connect.observe(started.elapsed().as_secs_f64());
        }
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            names: NameCache::default(),
        })
    }

    /// Closes idle connections that timed out or that the upstream closed; returns how many
    /// were closed. Called from the housekeeping task, so sockets the upstream closed do not
    /// linger in CLOSE_WAIT until the next request.
    pub fn reap(&self) -> usize {
        self.idle.reap()
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

enum Exchange {
    /// The connection was closed or reset before any byte of an answer arrived; `written`
    /// says whether the request had been handed to the kernel.
    Stale {
        written: bool,
    },
    Failed(DirectError),
}

fn stale_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    is_head: bool,
) -> Result<(http::response::Parts, Framing, bool), Exchange> {
    if let Err(e) = conn.io.write_all(head).await {
        return Err(if stale_kind(&e) {
            Exchange::Stale { written: false }
        } else {
            Exchange::Failed(e.into())
        });
    }
    let mut got_any = false;
    loop {
        // Interim answers (100, 102, 103) are read past; a 101 is never asked for on this path.
        let (parts, len) = loop {
            if !conn.buf.is_empty() {
                match parse_head(&conn.buf, &mut conn.names) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) => {}
                    Err(e) => return Err(Exchange::Failed(e)),
                }
                if conn.buf.len() >= MAX_HEAD {
                    return Err(Exchange::Failed(DirectError::HeadTooLarge));
                }
            }
            conn.buf.reserve(READ_CHUNK);
            match poll_fn(|cx| {
                tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
            })
            .await
            {
                Ok(0) if !got_any => return Err(Exchange::Stale { written: true }),
                Ok(0) => {
                    return Err(Exchange::Failed(DirectError::Framing(
                        "connection closed inside the response head",
                    )))
                }
                Ok(_) => got_any = true,
                Err(e) if !got_any && stale_kind(&e) => {
                    return Err(Exchange::Stale { written: true })
                }
                Err(e) => return Err(Exchange::Failed(e.into())),
            }
        };
        let head_bytes = conn.buf.split_to(len).freeze();
        let status = parts.status;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Exchange::Failed(DirectError::Framing(
                    "a protocol switch nobody asked for",
                )));
            }
            continue;
        }
        let mut response = build_parts(&parts, &head_bytes).map_err(Exchange::Failed)?;
        let (framing, keep_alive) =
            framing(&parts, &mut response, is_head).map_err(Exchange::Failed)?;
        return Ok((response, framing, keep_alive));
    }
}
