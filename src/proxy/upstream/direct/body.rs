//! The response body, read straight off the upstream connection; the connection goes back to
//! the pool when the body ends cleanly and is closed when the body is dropped early.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::head::Framing;
use super::idle::IdleConns;
use super::{Conn, DirectError, READ_CHUNK};

/// A response body read straight from the upstream connection, which goes back to the pool
/// when the body ends cleanly and is closed when the body is dropped early.
pub struct DirectBody {
    pub(super) conn: Option<Conn>,
    /// Where the connection goes back when the body ends cleanly.
    pub(super) pool: Arc<IdleConns>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

impl DirectBody {
    pub(super) fn finish_if_done(&mut self, now: Option<Instant>) {
        if self.framing != Framing::Done {
            return;
        }
        if let Some(conn) = self.conn.take() {
            // Bytes after the end of the answer mean the upstream and we disagree on framing.
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.checkin(conn, now);
            }
        }
    }

    /// Reads more from the upstream. Ready(Ok(false)) is end-of-file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, DirectError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
            conn.buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(true)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }

    /// Reads more for `poll_frame`: None when data came (decode again), otherwise what
    /// `poll_frame` returns. At end-of-file the body ends, with the error `at_eof` when the
    /// framing said more was due; any end drops the connection.
    #[allow(clippy::type_complexity)]
    fn read_more(
        &mut self,
        cx: &mut Context<'_>,
        at_eof: Option<&'static str>,
    ) -> Option<Poll<Option<Result<Frame<Bytes>, DirectError>>>> {
        let end = match self.poll_fill(cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(Ok(true)) => return None,
            Poll::Ready(Ok(false)) => at_eof.map(|msg| Err(DirectError::Framing(msg))),
            Poll::Ready(Err(e)) => Some(Err(e)),
        };
        self.conn = None;
        self.framing = Framing::Done;
        Some(Poll::Ready(end))
    }

    /// True when the rest of the body has already been read: polling it can never wait (most
    /// small answers arrive with their head), so it needs no idle timer.
    pub fn is_buffered_to_end(&self) -> bool {
        match self.framing {
            Framing::Done => true,
            Framing::Fixed(left) => self.buffered() as u64 >= left,
            _ => false,
        }
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.buf.len())
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.conn.as_mut() {
            Some(conn) => conn.buf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = DirectError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DirectError>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Fixed(left) => {
                    let buffered = this.buffered();
                    if buffered > 0 {
                        let n = (buffered as u64).min(left) as usize;
                        let data = this.take(n);
                        let left = left - n as u64;
                        this.framing = if left == 0 {
                            Framing::Done
                        } else {
                            Framing::Fixed(left)
                        };
                        this.finish_if_done(None);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Some(out) = this.read_more(
                        cx,
                        Some("the upstream closed the connection inside the body"),
                    ) {
                        return out;
                    }
                }
                Framing::Chunked(state) => match this.step_chunked(state) {
                    Err(e) => {
                        this.conn = None;
                        this.framing = Framing::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {
                        if this.framing == Framing::Done {
                            this.finish_if_done(None);
                            return Poll::Ready(None);
                        }
                        if this.framing != Framing::Chunked(state) {
                            continue;
                        }
                        if let Some(out) = this.read_more(
                            cx,
                            Some("the upstream closed the connection inside a chunked body"),
                        ) {
                            return out;
                        }
                    }
                },
                Framing::Close => {
                    let buffered = this.buffered();
                    if buffered > 0 {
                        let data = this.take(buffered);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Here the end of the connection is the end of the body.
                    if let Some(out) = this.read_more(cx, None) {
                        return out;
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Fixed(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
