//! Ending HTTP/2 connections that flood the proxy with frames that cost work but carry no
//! request: SETTINGS, PING, PRIORITY, and empty DATA / CONTINUATION frames (the 2019 flood
//! CVEs, and the SETTINGS/PING floods of issue 22).
//!
//! The h2 crate answers each SETTINGS and PING and stops reading while an answer waits to be
//! written, so memory stays bounded; but a client that reads the answers can keep the proxy
//! busy with them indefinitely. A browser sends one SETTINGS, acknowledges ours, and a few
//! PINGs; so each connection gets a budget of such frames
//! (`server.http2.max_control_frames`), raised by [`CREDIT_PER_REQUEST`] for every request
//! it opens (HEADERS). A connection over budget gets a read error, which ends it. Counting
//! frames needs no clock: the same bytes give the same verdict on any machine.
//!
//! Phases: the 24-byte client preface (anything else: not HTTP/2, stop looking), then frame
//! headers (9 bytes each) whose payloads are skipped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the client preface of HTTP/2 is (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Control frames each request (a HEADERS frame) adds to the budget.
pub(crate) const CREDIT_PER_REQUEST: u64 = 4;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;

/// The error a flooding connection ends with.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 control-frame flood: more than {0} SETTINGS/PING/PRIORITY/empty frames")]
pub(crate) struct FrameFlood(pub u64);

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Matching the preface; this many bytes matched so far.
    Preface(usize),
    /// Collecting a frame header; this many of its 9 bytes so far.
    Header(usize),
    /// Skipping this many payload bytes.
    Payload(u64),
    /// Not HTTP/2, or already over budget: nothing more to look at.
    Off,
}

/// The frame counter between reads.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    phase: Phase,
    header: [u8; 9],
    /// Control frames seen so far.
    spent: u64,
    /// Control frames allowed so far: the base plus the credit of each request.
    allowed: u64,
}

impl FrameBudget {
    /// `enabled` is false where no HTTP/2 can come (an HTTP/1-only connection).
    pub(crate) fn new(base: u64, enabled: bool) -> Self {
        FrameBudget {
            phase: if enabled {
                Phase::Preface(0)
            } else {
                Phase::Off
            },
            header: [0; 9],
            spent: 0,
            allowed: base,
        }
    }

    /// Follows the frames over the bytes just read; Err once over budget.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameFlood> {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return Ok(()),
                Phase::Preface(n) => {
                    let take = (PREFACE.len() - n).min(bytes.len());
                    if bytes[..take] != PREFACE[n..n + take] {
                        self.phase = Phase::Off;
                        return Ok(());
                    }
                    self.phase = if n + take == PREFACE.len() {
                        Phase::Header(0)
                    } else {
                        Phase::Preface(n + take)
                    };
                    bytes = &bytes[take..];
                }
                Phase::Header(n) => {
                    let take = (9 - n).min(bytes.len());
                    self.header[n..n + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if n + take < 9 {
                        self.phase = Phase::Header(n + take);
                        continue;
                    }
                    let len = u64::from(u32::from_be_bytes([
                        0,
                        self.header[0],
                        self.header[1],
                        self.header[2],
                    ]));
                    self.count(self.header[3], self.header[4], len)?;
                    self.phase = if len == 0 {
                        Phase::Header(0)
                    } else {
                        Phase::Payload(len)
                    };
                }
                Phase::Payload(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.phase = if take == left {
                        Phase::Header(0)
                    } else {
                        Phase::Payload(left - take)
                    };
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, kind: u8, flags: u8, len: u64) -> Result<(), FrameFlood> {
        let control = match kind {
            HEADERS => {
                self.allowed = self.allowed.saturating_add(CREDIT_PER_REQUEST);
                false
            }
            SETTINGS | PING | PRIORITY => true,
            DATA => len == 0 && flags & END_STREAM == 0,
            CONTINUATION => len == 0,
            _ => false,
        };
        if control {
            self.spent += 1;
            if self.spent > self.allowed {
                self.phase = Phase::Off;
                return Err(FrameFlood(self.allowed));
            }
        }
        Ok(())
    }
}

/// A connection's reads with the frame budget enforced.
pub(crate) struct FloodGuard<T> {
    inner: T,
    budget: FrameBudget,
}

impl<T> FloodGuard<T> {
    pub(crate) fn new(inner: T, budget: FrameBudget) -> Self {
        FloodGuard { inner, budget }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FloodGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if let Err(flood) = this.budget.feed(&buf.filled()[before..]) {
                tracing::debug!(error = %flood, "closing a flooding HTTP/2 connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, flood)));
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FloodGuard<T> {
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

/// True when a connection error is this guard's verdict.
pub(crate) fn is_flood(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<FrameFlood>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<FrameFlood>().is_some())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Whether `wire` fed in pieces of `step` bytes floods a budget of 10, and the frames spent;
/// for the fuzz target (src/fuzzing.rs).
pub(crate) fn fuzz_verdict(wire: &[u8], step: usize) -> (bool, u64) {
    let mut b = FrameBudget::new(10, true);
    for piece in wire.chunks(step.max(1)) {
        if b.feed(piece).is_err() {
            return (true, b.spent);
        }
    }
    (false, b.spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `wire` in pieces of `step` bytes; Ok(frames spent) or the flood.
    fn run(wire: &[u8], step: usize, base: u64) -> Result<u64, FrameFlood> {
        let mut b = FrameBudget::new(base, true);
        for piece in wire.chunks(step) {
            b.feed(piece)?;
        }
        Ok(b.spent)
    }

    #[test]
    fn a_normal_connection_stays_within_budget() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, &[0; 12]));
        wire.extend(frame(SETTINGS, 1, &[]));
        for _ in 0..50 {
            wire.extend(frame(HEADERS, 0x5, &[0x82; 20]));
            wire.extend(frame(PING, 0, &[0; 8]));
        }
        wire.extend(frame(DATA, END_STREAM, &[]));
        for step in [1, 7, 9, 24, 4096] {
            assert_eq!(run(&wire, step, 10).unwrap(), 52, "step {step}");
        }
    }

    #[test]
    fn settings_ping_priority_and_empty_frame_floods_are_refused() {
        for flood in [
            frame(SETTINGS, 0, &[0, 4, 0, 0, 0xff, 0xff]),
            frame(PING, 0, &[0; 8]),
            frame(PRIORITY, 0, &[0; 5]),
            frame(DATA, 0, &[]),
            frame(CONTINUATION, 0, &[]),
        ] {
            let mut wire = PREFACE.to_vec();
            for _ in 0..101 {
                wire.extend_from_slice(&flood);
            }
            for step in [1, 13, 4096] {
                assert!(run(&wire, step, 100).is_err(), "{:?} step {step}", flood[3]);
            }
        }
    }

    #[test]
    fn http1_is_not_looked_at() {
        let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        wire.extend(std::iter::repeat_n(0u8, 10_000));
        assert_eq!(run(&wire, 5, 0).unwrap(), 0);
    }

    #[test]
    fn the_verdict_is_recognised_in_an_error_chain() {
        let e = io::Error::new(io::ErrorKind::InvalidData, FrameFlood(3));
        assert!(is_flood(&e));
        assert!(!is_flood(&io::Error::other("other")));
    }
}
