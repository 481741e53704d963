//! Peek and replay: read a bounded prefix of a body, look at it, and still send the body on
//! byte for byte and frame for frame. The web-service guard (parameters in a form body), the
//! SAML ACS (a POSTed response) and MNet (the XML-RPC envelope) all need it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// What has been read of a body so far.
#[derive(Debug, Default)]
pub struct Prefix {
    /// The data frames read, in order (empty frames left out).
    pub chunks: VecDeque<Bytes>,
    /// Their total length.
    pub len: usize,
    /// Trailers, if the body ended with them.
    pub trailers: Option<HeaderMap>,
    /// The body has no more frames after these.
    pub ended: bool,
}

impl Prefix {
    /// The prefix as one contiguous buffer (no copy when it is one frame).
    pub fn contiguous(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        }
    }
}

/// Reads frames from `body` into `prefix` until it holds at least `max` bytes or the body ends.
/// Memory is bounded by `max` plus one frame.
pub async fn read_prefix<B>(body: &mut B, prefix: &mut Prefix, max: usize) -> Result<(), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    if !prefix.ended {
        prefix.ended = body.is_end_stream();
    }
    while !prefix.ended && prefix.len < max {
        match body.frame().await {
            None => prefix.ended = true,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    prefix.len += data.len();
                    if !data.is_empty() {
                        prefix.chunks.push_back(data);
                    }
                    prefix.ended = body.is_end_stream();
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        prefix.trailers = Some(t);
                    }
                    prefix.ended = true;
                }
            },
        }
    }
    Ok(())
}

/// Replays a [`Prefix`], then the rest of the original body, frame for frame.
pub struct ReplayBody<B> {
    prefix: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// None once the original body has ended.
    rest: Option<B>,
}

impl<B> ReplayBody<B> {
    pub fn new(prefix: Prefix, rest: B) -> Self {
        ReplayBody {
            rest: (!prefix.ended).then_some(rest),
            prefix: prefix.chunks,
            trailers: prefix.trailers,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{BoxError, ProxyBody};
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn chunked(parts: Vec<&'static [u8]>) -> ProxyBody {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p))));
        StreamBody::new(stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_peeked_body_replays_whole_and_in_frames() {
        let mut body = chunked(vec![b"abc", b"def", b"ghi"]);
        let mut prefix = Prefix::default();
        read_prefix(&mut body, &mut prefix, 4).await.unwrap();
        assert_eq!(&prefix.contiguous()[..], b"abcdef");
        assert!(!prefix.ended);
        let replay = ReplayBody::new(prefix, body);
        let all = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefghi");
    }

    #[tokio::test]
    async fn a_short_body_is_read_to_its_end() {
        let mut body = chunked(vec![b"ab"]);
        let mut prefix = Prefix::default();
        read_prefix(&mut body, &mut prefix, 1024).await.unwrap();
        assert!(prefix.ended);
        let replay = ReplayBody::new(prefix, body);
        assert!(!replay.is_end_stream());
        assert_eq!(&replay.collect().await.unwrap().to_bytes()[..], b"ab");
    }
}
