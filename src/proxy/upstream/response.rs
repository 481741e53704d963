//! The upstream's answer as the rest of the pipeline sees it, whichever client carried the
//! request: one body type, and a head already normalised (hop-by-hop headers out, the framing
//! rule of RFC 9112 §6.3 applied, the client-side version the proxy's own).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header;
use http::{Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::direct::DirectBody;
use crate::body::BoxError;
use crate::proxy::headers;

/// The upstream's response body, from whichever path carried the request.
pub enum UpstreamBody {
    Pooled(Incoming),
    Direct(DirectBody),
    /// No body: a protocol switch, whose bytes flow through the joined connections instead.
    Empty,
}

impl UpstreamBody {
    /// True when the body is already in memory to its end, so it can never stall.
    pub fn cannot_stall(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_buffered_to_end(),
            UpstreamBody::Empty => true,
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
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Direct(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Normalises a head from hyper's pooled client: what the direct path does while parsing.
/// Transfer-Encoding wins over Content-Length, and the length must not reach the client with
/// the re-framed body (RFC 9112 §6.3): a client trusting it would cut it short.
///
/// Transfer-Encoding is hop-by-hop and never reaches the client, so a coding other than chunked
/// alone (gzip, or gzip under chunked) could not be undone there: refused, as the direct path
/// refuses it. (hyper reads such a body to the close and would hand on the coded bytes.)
pub(super) fn normalise_pooled<B>(response: &mut Response<B>) -> Result<(), &'static str> {
    let map = response.headers_mut();
    if map.contains_key(header::TRANSFER_ENCODING) {
        if !only_chunked(map) {
            return Err("a transfer coding other than chunked");
        }
        map.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(map, false);
    normalise_version(response);
    Ok(())
}

/// True when the transfer codings, over every Transfer-Encoding field, are `chunked` alone.
fn only_chunked(map: &http::HeaderMap) -> bool {
    let mut codings = map
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty());
    matches!(
        (codings.next(), codings.next()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked")
    )
}

/// The version toward the client is the proxy's own, whatever the upstream spoke: an HTTP/1.0
/// upstream must not turn the client's answers into HTTP/1.0 ones and close its connection.
pub(super) fn normalise_version<B>(response: &mut Response<B>) {
    *response.version_mut() = Version::HTTP_11;
}
