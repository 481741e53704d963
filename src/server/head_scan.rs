//! Refusing a request head that carries both Content-Length and Transfer-Encoding.
//!
//! RFC 9112 §6.3 lets Transfer-Encoding win, and hyper does just that: it drops the
//! Content-Length before the pipeline sees the request, so nothing after hyper can tell. nginx
//! and Envoy refuse such a request with 400, the safer answer at a public edge where the next
//! hop's reading is not ours to control. So the raw bytes are looked at here, under hyper, as
//! they are read:
//!
//! 1. head: each header line's name is compared with the two; `Content-Length`'s value is kept
//!    (the body's length), `Upgrade` and an h2c preface end the scan (what follows is no longer
//!    HTTP/1 framing);
//! 2. body: skipped by its framing (a length, or chunk sizes and trailers), so the next head is
//!    found where hyper will find it;
//! 3. a head with both names is recorded by its number on the connection ([`HeadVerdicts`]);
//!    the connection's service answers that request 400 and closes. The scan stops there.
//!
//! Anything the scan cannot follow (a bad length, a bad chunk size) hyper refuses itself and
//! closes the connection, so the scan just stops. Head bytes cost one pass over each line; a
//! body costs a subtraction per read (chunked: a pass over each size line).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which request on a connection had a conflicting head, shared by the reader and the service.
#[derive(Debug, Default)]
pub(crate) struct HeadVerdicts {
    /// Number (1-based) of the first head with both Content-Length and Transfer-Encoding;
    /// 0 while there is none.
    conflict_at: AtomicU64,
    /// Requests the service has started, to match a request with its head.
    served: AtomicU64,
}

impl HeadVerdicts {
    /// Called once per request the service sees, in order; true when this request's head had
    /// both framing headers.
    pub(crate) fn next_request_conflicts(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.conflict_at.load(Ordering::Relaxed) == n
    }
}

/// Only the start of a header line is kept: enough for the names looked for and a length.
const LINE_KEEP: usize = 40;

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request head; `first` until the request line has been read.
    Head { first: bool },
    /// Skipping this many body bytes.
    Fixed(u64),
    /// In a chunk-size line (`size` so far, `digits` read, past the digits after `ext`).
    ChunkSize { size: u64, digits: u8, ext: bool },
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// After chunk data: up to the LF that ends it.
    ChunkEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    /// Nothing more to look at.
    Done,
}

/// The scanner's state between reads.
#[derive(Debug)]
struct Scanner {
    phase: Phase,
    /// The start of the current line (head or trailers), at most [`LINE_KEEP`] bytes.
    line: Vec<u8>,
    /// Bytes of the current line beyond what `line` keeps.
    line_extra: usize,
    /// What the current head said so far.
    content_length: Option<u64>,
    chunked: bool,
    /// A header that ends HTTP/1 framing after this request (`Upgrade`).
    upgrade: bool,
    /// Heads completed on this connection.
    heads: u64,
    verdicts: Arc<HeadVerdicts>,
}

impl Scanner {
    fn new(verdicts: Arc<HeadVerdicts>, enabled: bool) -> Self {
        Scanner {
            phase: if enabled {
                Phase::Head { first: true }
            } else {
                Phase::Done
            },
            line: Vec::with_capacity(LINE_KEEP),
            line_extra: 0,
            content_length: None,
            chunked: false,
            upgrade: false,
            heads: 0,
            verdicts,
        }
    }

    /// Follows the framing over the bytes just read.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.phase {
                Phase::Done => return,
                Phase::Head { first: false } if self.line.is_empty() && self.line_extra == 0 => {
                    self.header_lines(bytes)
                }
                Phase::Head { .. } | Phase::Trailers => self.line_bytes(bytes),
                Phase::Fixed(n) => {
                    let take = n.min(bytes.len() as u64);
                    self.phase = if take == n {
                        self.body_done()
                    } else {
                        Phase::Fixed(n - take)
                    };
                    &bytes[take as usize..]
                }
                Phase::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    self.phase = if take == n {
                        Phase::ChunkEnd
                    } else {
                        Phase::ChunkData(n - take)
                    };
                    &bytes[take as usize..]
                }
                Phase::ChunkEnd => match memchr::memchr(b'\n', bytes) {
                    Some(i) => {
                        self.phase = Phase::ChunkSize {
                            size: 0,
                            digits: 0,
                            ext: false,
                        };
                        &bytes[i + 1..]
                    }
                    None => &[],
                },
                Phase::ChunkSize { size, digits, ext } => {
                    self.chunk_size(bytes[0], size, digits, ext);
                    &bytes[1..]
                }
            };
        }
    }

    /// One byte of a chunk-size line.
    fn chunk_size(&mut self, b: u8, size: u64, digits: u8, ext: bool) {
        self.phase = match b {
            b'\n' if digits == 0 => Phase::Done,
            b'\n' if size == 0 => {
                self.line.clear();
                self.line_extra = 0;
                Phase::Trailers
            }
            b'\n' => Phase::ChunkData(size),
            _ if ext => Phase::ChunkSize { size, digits, ext },
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 16 => {
                let d = (b as char).to_digit(16).unwrap_or(0);
                Phase::ChunkSize {
                    size: size * 16 + u64::from(d),
                    digits: digits + 1,
                    ext,
                }
            }
            b';' | b' ' | b'\t' | b'\r' if digits > 0 => Phase::ChunkSize {
                size,
                digits,
                ext: true,
            },
            // hyper refuses this body and closes the connection.
            _ => Phase::Done,
        };
    }

    /// Header lines, starting at the start of one: the common case, kept to a few instructions
    /// per line (`header_line` rejects most by their first letter); the blank line ends the
    /// head; a partial last line is left to `line_bytes`.
    fn header_lines<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let line = &bytes[start..nl];
            start = nl + 1;
            match line {
                [] | [b'\r'] => {
                    self.phase = self.head_done();
                    return &bytes[start..];
                }
                _ => {
                    // Cut and trimmed as `line_bytes` and `end_line` do, so a line is read the
                    // same however the reads split it.
                    let keep = line.len().min(LINE_KEEP);
                    let kept = &line[..keep];
                    self.header_line(kept.strip_suffix(b"\r").unwrap_or(kept), line.len() - keep);
                    if self.phase == Phase::Done {
                        return &[];
                    }
                }
            }
        }
        self.line_bytes(&bytes[start..])
    }

    /// Head or trailer bytes: acts on each complete line. A line that arrived whole in this
    /// read (the usual case) is looked at where it lies; only a line split across reads is
    /// collected into `line` first.
    fn line_bytes<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (part, rest, complete) = match memchr::memchr(b'\n', bytes) {
            Some(i) => (&bytes[..i], &bytes[i + 1..], true),
            None => (bytes, &[][..], false),
        };
        if complete && self.line.is_empty() && self.line_extra == 0 {
            let keep = part.len().min(LINE_KEEP);
            self.end_line(&part[..keep], part.len() - keep);
            return rest;
        }
        let room = LINE_KEEP.saturating_sub(self.line.len()).min(part.len());
        self.line.extend_from_slice(&part[..room]);
        self.line_extra += part.len() - room;
        if complete {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, self.line_extra);
            self.line = line;
            self.line.clear();
            self.line_extra = 0;
        }
        rest
    }

    /// A whole line (without its LF): its first `LINE_KEEP` bytes, and how many more it had.
    fn end_line(&mut self, line: &[u8], extra: usize) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let empty = line.is_empty() && extra == 0;
        match self.phase {
            Phase::Trailers if empty => self.phase = self.body_done(),
            Phase::Head { first: true } if empty => {} // empty lines before a request line
            Phase::Head { first: true } => {
                self.phase = if line.starts_with(b"PRI * HTTP/2.0") {
                    Phase::Done
                } else {
                    Phase::Head { first: false }
                };
            }
            Phase::Head { first: false } if empty => self.phase = self.head_done(),
            Phase::Head { first: false } => self.header_line(line, extra),
            _ => {}
        }
    }

    fn header_line(&mut self, line: &[u8], extra: usize) {
        // Most lines name none of the three: their first letter says so.
        if !matches!(
            line.first().map(u8::to_ascii_lowercase),
            Some(b't' | b'u' | b'c')
        ) {
            return;
        }
        // The longest name looked for is 17 bytes: a colon further in ends no such name.
        let Some(colon) = memchr::memchr(b':', &line[..line.len().min(18)]) else {
            return;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = value.trim_ascii();
            let parsed = (extra == 0 && !value.is_empty())
                .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                .flatten();
            match parsed {
                Some(n) => self.content_length = Some(n),
                // hyper refuses this head; nothing after it is read.
                None => self.phase = Phase::Done,
            }
        }
    }

    /// The blank line after a head: record a conflict, else move to its body.
    fn head_done(&mut self) -> Phase {
        self.heads += 1;
        let (length, chunked) = (
            self.content_length.take(),
            std::mem::take(&mut self.chunked),
        );
        if chunked && length.is_some() {
            // The first is the only one: the connection closes after its answer.
            self.verdicts
                .conflict_at
                .store(self.heads, Ordering::Relaxed);
            return Phase::Done;
        }
        if std::mem::take(&mut self.upgrade) {
            return Phase::Done;
        }
        match (chunked, length) {
            (true, _) => Phase::ChunkSize {
                size: 0,
                digits: 0,
                ext: false,
            },
            (false, Some(n)) if n > 0 => Phase::Fixed(n),
            _ => Phase::Head { first: true },
        }
    }

    fn body_done(&self) -> Phase {
        Phase::Head { first: true }
    }
}

/// A connection's reads, scanned for conflicting framing headers before hyper parses them.
pub(crate) struct HeadScan<T> {
    inner: T,
    scanner: Scanner,
}

impl<T> HeadScan<T> {
    /// `enabled` is false where no HTTP/1 head will come (HTTP/2 over TLS).
    pub(crate) fn new(inner: T, verdicts: Arc<HeadVerdicts>, enabled: bool) -> Self {
        HeadScan {
            inner,
            scanner: Scanner::new(verdicts, enabled),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadScan<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.scanner.feed(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadScan<T> {
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

/// The number of the first conflicting head in `wire` fed in pieces of `step` bytes (0: none);
/// for the fuzz target (src/fuzzing.rs).
pub(crate) fn fuzz_conflict(wire: &[u8], step: usize) -> u64 {
    let verdicts = Arc::new(HeadVerdicts::default());
    let mut s = Scanner::new(verdicts.clone(), true);
    for piece in wire.chunks(step.max(1)) {
        s.feed(piece);
    }
    verdicts.conflict_at.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the conflicting head's number (0: none).
    fn scan(wire: &[u8], step: usize) -> u64 {
        let verdicts = Arc::new(HeadVerdicts::default());
        let mut s = Scanner::new(verdicts.clone(), true);
        for piece in wire.chunks(step) {
            s.feed(piece);
        }
        verdicts.conflict_at.load(Ordering::Relaxed)
    }

    fn every_step(wire: &[u8]) -> Vec<u64> {
        let mut seen: Vec<u64> = (1..=wire.len()).map(|step| scan(wire, step)).collect();
        seen.dedup();
        seen
    }

    #[test]
    fn both_headers_in_either_order_are_found() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
        ] {
            assert_eq!(every_step(head), vec![1]);
        }
    }

    #[test]
    fn bodies_are_skipped_so_the_right_head_is_named() {
        let wire = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\n\r\n\
            Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nabcdefghijk\
            POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;ext=1\r\nwxyz\r\n11\r\nContent-Length:\r\n\r\n0\r\nX-T: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_step(wire), vec![4]);
    }

    #[test]
    fn plain_requests_and_h2c_and_upgrades_are_not_flagged() {
        assert_eq!(
            every_step(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            vec![0]
        );
        assert_eq!(
            every_step(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"),
            vec![0]
        );
        assert_eq!(
            every_step(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nA\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"),
            vec![0]
        );
    }

    #[test]
    fn long_lines_and_bad_lengths_stop_the_scan_without_a_verdict() {
        let long = format!(
            "GET / HTTP/1.1\r\nX-Long: {}\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a".repeat(500)
        );
        assert_eq!(every_step(long.as_bytes()), vec![0]);
    }

    /// Random heads and bodies from pieces that matter to the scan (both names in any case,
    /// lengths, chunked bodies, long and bare-LF lines): however the reads split the bytes,
    /// the verdict is the one the whole buffer gets (the in-place and the collected paths agree).
    #[test]
    fn random_wires_get_one_verdict_for_every_split() {
        const LINES: &[&str] = &[
            "Host: a\r\n",
            "content-length: 3\r\n",
            "Content-Length:7\r\n",
            "TRANSFER-ENCODING: chunked\r\n",
            "transfer-encoding: chunked\n",
            "Upgrade: x\r\n",
            "Cookie: a=b; c=d\r\n",
            "Content-Type: text/plain\r\n",
            "content-length:                        5\r\n", // 40 bytes before the CR: the cut-off
            "\r\r\n",
            "u\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5ca1_ab1e);
        for _ in 0..300 {
            let mut wire = Vec::new();
            for _ in 0..rng.usize(1..4) {
                wire.extend_from_slice(b"POST / HTTP/1.1\r\n");
                for _ in 0..rng.usize(0..6) {
                    wire.extend_from_slice(LINES[rng.usize(..LINES.len())].as_bytes());
                }
                wire.extend_from_slice(if rng.bool() { b"\r\n" } else { b"\n" });
                match rng.u8(0..3) {
                    0 => wire.extend_from_slice(b"abcdefg"),
                    1 => wire.extend_from_slice(b"3\r\nabc\r\n0\r\nX: y\r\n\r\n"),
                    _ => {}
                }
            }
            let whole = scan(&wire, wire.len());
            for step in 1..wire.len() {
                assert_eq!(
                    scan(&wire, step),
                    whole,
                    "step {step}: {:?}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
    }

    #[test]
    fn the_service_matches_requests_with_heads() {
        let verdicts = HeadVerdicts::default();
        verdicts.conflict_at.store(2, Ordering::Relaxed);
        assert!(!verdicts.next_request_conflicts());
        assert!(verdicts.next_request_conflicts());
        assert!(!verdicts.next_request_conflicts());
    }
}
