//! The header-read timeout (`server.limits.header_read_timeout`), with one timer per connection.
//!
//! A connection with no request in flight must deliver a complete request head within the
//! timeout: that defeats slowloris (a head sent a byte at a time) and closes idle keep-alive
//! connections. hyper can do this itself, but it allocates and registers a fresh timer for every
//! request on a keep-alive connection and cancels it when the head arrives; on a proxied
//! request of ~14 µs that showed as a measurable share. Here the connection's I/O carries one
//! timer for its whole life. The pipeline counts requests in flight ([`HeadClock::start`],
//! dropped when the response body ends); when the count falls to zero the deadline moves to
//! the request's end + timeout. The timer is a [`LaterSleep`] (src/timer.rs): armed for an
//! earlier deadline, it is not touched when the deadline moves later, so a request costs two
//! atomic counts and no clock read of its own (the pipeline passes its end-of-request reading).
//!
//! While a request is in flight the timer is not looked at: the body has its own idle timeout
//! (`client_body_timeout`), and a response being written is the upstream's and the client's
//! business. The semantics are those of an nginx `client_header_timeout` plus a keep-alive
//! timeout of the same length. HTTP/2 over TLS is not wrapped (its streams multiplex on one
//! connection that browsers keep open); a plain listener that also takes prior-knowledge h2c
//! is, so there the timeout also closes an h2c connection idle for that long.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::Instant;

use crate::timer::LaterSleep;

/// The error a connection ends with when its head did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("no complete request head within {0:?}")]
pub(crate) struct HeadTimedOut(pub Duration);

/// Requests in flight on one connection and since when it has been idle.
#[derive(Debug)]
pub(crate) struct HeadClock {
    /// Set for HTTP/2 over TLS and once a connection has been upgraded (WebSocket): the
    /// deadline no longer applies.
    off: AtomicBool,
    in_flight: AtomicUsize,
    /// Nanoseconds after `base` at which the connection last became idle.
    idle_since: AtomicU64,
    base: Instant,
    timeout: Duration,
}

impl HeadClock {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(HeadClock {
            off: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            base: Instant::now(),
            timeout,
        })
    }

    /// Stops enforcing the deadline for good (an upgraded connection, HTTP/2 over TLS).
    pub(crate) fn turn_off(&self) {
        self.off.store(true, Ordering::Relaxed);
    }

    /// A request head has arrived; the returned guard ends the request when dropped (the
    /// pipeline keeps it until the response body has been sent or abandoned).
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(self.clone()))
    }

    /// A request has ended; `now` is a clock reading taken at its end, when the caller has
    /// one (otherwise the clock is read here, only if the connection became idle).
    fn finish(&self, now: Option<Instant>) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = now.unwrap_or_else(Instant::now);
            let since = now.saturating_duration_since(self.base).as_nanos();
            self.idle_since
                .store(since.min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        }
    }

    /// The deadline for the next head, when no request is in flight.
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.off.load(Ordering::Relaxed) {
            return None;
        }
        let since = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        Some(self.base + since + self.timeout)
    }
}

/// Keeps its connection's request count up while it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Option<Arc<HeadClock>>);

impl InFlight {
    /// Ends the request with a clock reading the caller already took at its end (the
    /// connection's idle time counts from there), saving a read of the clock.
    pub(crate) fn end_at(mut self, now: std::time::Instant) {
        if let Some(clock) = self.0.take() {
            clock.finish(Some(Instant::from_std(now)));
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(clock) = self.0.take() {
            clock.finish(None);
        }
    }
}

/// A connection's I/O with the header-read deadline enforced on reads.
pub(crate) struct TimedIo<T> {
    inner: T,
    clock: Arc<HeadClock>,
    sleep: LaterSleep,
}

impl<T> TimedIo<T> {
    pub(crate) fn new(inner: T, clock: Arc<HeadClock>) -> Self {
        let first = clock.base + clock.timeout;
        TimedIo {
            inner,
            clock,
            sleep: LaterSleep::new(first),
        }
    }
}

impl<T: Read + Unpin> Read for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {}
            ready => return ready,
        }
        let Some(deadline) = this.clock.deadline() else {
            return Poll::Pending;
        };
        // Deadlines only move later: the sleep stays armed for an earlier one and moves on
        // only if it fires (src/timer.rs).
        match this.sleep.poll_until(deadline, cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                HeadTimedOut(this.clock.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Write + Unpin> Write for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

/// True when a connection error is the header-read timeout firing.
pub(crate) fn is_head_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<HeadTimedOut>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<HeadTimedOut>().is_some())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_connection_times_out_and_busy_one_does_not() {
        let clock = HeadClock::new(Duration::from_secs(10));
        let (client, server) = tokio::io::duplex(64);
        let mut io = hyper_util::rt::TokioIo::new(TimedIo::new(
            hyper_util::rt::TokioIo::new(server),
            clock.clone(),
        ));
        let _client = client;

        // A request in flight: no deadline, the read just waits.
        let guard = clock.start();
        let mut buf = [0u8; 8];
        let waited = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(waited.is_err(), "a busy connection must not time out");

        // Idle again: the next head must come within 10 s of now.
        drop(guard);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(is_head_timeout(&err));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn data_in_time_is_read() {
        let clock = HeadClock::new(Duration::from_secs(10));
        let (mut client, server) = tokio::io::duplex(64);
        let mut io =
            hyper_util::rt::TokioIo::new(TimedIo::new(hyper_util::rt::TokioIo::new(server), clock));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            client.write_all(b"GET").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_turned_off_never_fires() {
        let clock = HeadClock::new(Duration::from_secs(10));
        clock.turn_off();
        let (_client, server) = tokio::io::duplex(64);
        let mut io =
            hyper_util::rt::TokioIo::new(TimedIo::new(hyper_util::rt::TokioIo::new(server), clock));
        let mut buf = [0u8; 8];
        let waited = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(waited.is_err(), "an upgraded connection must not time out");
    }

    #[test]
    fn other_errors_are_not_head_timeouts() {
        let e = io::Error::new(io::ErrorKind::TimedOut, "something else");
        assert!(!is_head_timeout(&e));
    }
}
