//! The direct upstream path: HTTP/1.1 to a plain-http upstream, spoken inside the request's own
//! task over pooled keep-alive connections.
//!
//! hyper's pooled client runs every upstream connection as a task of its own and hands each
//! request, response head and body chunk across channels to it: three hand-offs and two extra
//! task polls per request. On loopback, where a request costs ~15 µs in all, that is a large share
//! (see docs/performance.md). This path writes the request head and reads the
//! response on the caller's task, and the response body reads the socket itself, so a bodiless
//! request costs two socket writes and two reads and no hand-off at all.
//!
//! Scope, on purpose narrow: requests without a body and without an upgrade, to an `http://`
//! upstream. Everything else (uploads, WebSocket, `https://` upstreams) keeps hyper's client, whose
//! full-duplex body handling those need. No crate offers an HTTP/1.1 client that runs in the
//! caller's task over a pool; the parsing itself is `httparse`, the same parser hyper uses.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; Transfer-Encoding wins
//! over Content-Length (and such a connection is not reused); differing Content-Lengths are an
//! error; otherwise the body runs to the close. A connection goes back to the pool only when its
//! body was read to its exact end with nothing after it, and the upstream allowed keep-alive.

//!
//! One file per step: `pool` (connecting, the exchange, retries), `idle` (the idle connections), `encode` (the request
//! head), `head` (the response head and its framing), `body` (reading the body off the
//! connection), `chunked` (chunked decoding), `names` (the per-connection header-name cache).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::net::TcpStream;

mod body;
pub(crate) mod chunked;
mod encode;
mod head;
mod idle;
mod names;
mod pool;
#[cfg(test)]
mod tests;

pub use body::DirectBody;
pub use encode::encode_head;
pub use head::{parse_response_head, recycle_header_map};
pub use names::NameCache;
pub use pool::DirectPool;

/// The longest response head accepted (status line and headers).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
pub(super) const MAX_HEADERS: usize = 128;
/// The longest chunk-size line or trailer section of a chunked body.
pub(super) const MAX_CHUNK_LINE: usize = 4096;
pub(super) const MAX_TRAILERS: usize = 16 * 1024;
/// Reads ask for at least this much room.
pub(super) const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum DirectError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connecting to {addr} took longer than {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("the upstream closed the connection before it answered")]
    ClosedBeforeAnswer,
    #[error("upstream I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream sent a malformed response head: {0}")]
    Parse(httparse::Error),
    #[error("the upstream's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream's response is badly framed: {0}")]
    Framing(&'static str),
}

impl DirectError {
    /// True when no connection to the upstream could be made at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            DirectError::Connect { .. } | DirectError::ConnectTimeout { .. }
        )
    }
}

/// One open upstream connection and what has been read from it but not yet used.
pub(super) struct Conn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
    /// The header names of this connection's previous responses.
    pub(super) names: NameCache,
}
