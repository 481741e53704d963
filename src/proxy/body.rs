//! Body wrappers for both directions: a size limit (413) and an idle timeout (a peer that stops
//! sending is cut off), with the reason recorded so the pipeline can answer with the right
//! status after the upstream call fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

#[derive(Debug, Error)]
pub(crate) enum BodyError {
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("no body data for {0:?}")]
    IdleTimeout(Duration),
    #[error("{0}")]
    Inner(BoxError),
}

/// Why a body ended early, readable after the fact, and a signal for when it ended at all
/// (the upstream response timeout starts only once the whole request has been sent).
#[derive(Default, Debug)]
pub(crate) struct BodyFate(AtomicU8, Notify);

impl BodyFate {
    const TOO_LARGE: u8 = 1;
    const IDLE: u8 = 2;
    const BROKEN: u8 = 3;
    const MALFORMED: u8 = 4;

    pub(crate) fn too_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TOO_LARGE
    }
    pub(crate) fn timed_out(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::IDLE
    }
    pub(crate) fn broken(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::BROKEN
    }
    /// The client's framing was bad (a chunk size that is not hex, a missing CRLF).
    pub(crate) fn malformed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::MALFORMED
    }
    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
        self.1.notify_one();
    }
    fn mark_ended(&self) {
        self.1.notify_one();
    }
    /// Resolves once the body has ended, cleanly or not.
    pub(crate) async fn ended(&self) {
        self.1.notified().await
    }
}

/// hyper's chunked decoder reports bad framing as an `InvalidInput`/`InvalidData` I/O error;
/// a client that went away shows as EOF or a reset instead.
fn is_bad_framing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        source = err.source();
    }
    false
}

pin_project! {
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        limit: Option<u64>,
        seen: u64,
        idle: Duration,
        // Armed only while the inner body is pending, so a body that is always ready costs no timer.
        sleep: Option<Pin<Box<Sleep>>>,
        fate: Arc<BodyFate>,
    }
}

impl<B> GuardedBody<B> {
    pub(crate) fn new(inner: B, limit: Option<u64>, idle: Duration) -> (Self, Arc<BodyFate>) {
        let fate = Arc::new(BodyFate::default());
        (
            GuardedBody {
                inner,
                limit,
                seen: 0,
                idle,
                sleep: None,
                fate: fate.clone(),
            },
            fate,
        )
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.sleep = None;
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(limit) = *this.limit {
                        if *this.seen > limit {
                            this.fate.set(BodyFate::TOO_LARGE);
                            return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(limit)))));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.fate.set(if is_bad_framing(e.as_ref()) {
                    BodyFate::MALFORMED
                } else {
                    BodyFate::BROKEN
                });
                Poll::Ready(Some(Err(Box::new(BodyError::Inner(e)))))
            }
            Poll::Ready(None) => {
                this.fate.mark_ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = *this.idle;
                let sleep = this.sleep.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + idle))
                });
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.fate.set(BodyFate::IDLE);
                        Poll::Ready(Some(Err(Box::new(BodyError::IdleTimeout(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn limit_is_enforced_and_recorded() {
        let (b, fate) = GuardedBody::new(
            Full::new(Bytes::from_static(b"0123456789")),
            Some(5),
            Duration::from_secs(1),
        );
        assert!(b.collect().await.is_err());
        assert!(fate.too_large());
    }

    #[tokio::test]
    async fn under_the_limit_passes_whole() {
        let (b, fate) = GuardedBody::new(
            Full::new(Bytes::from_static(b"0123")),
            Some(5),
            Duration::from_secs(1),
        );
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"0123");
        assert!(!fate.too_large() && !fate.timed_out());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let stream = futures_util::stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
        let (b, fate) = GuardedBody::new(StreamBody::new(stream), None, Duration::from_secs(3));
        assert!(b.collect().await.is_err());
        assert!(fate.timed_out());
    }
}
