//! The file body: a list of segments (file ranges and literal bytes, the latter for multipart
//! framing) turned into `Bytes` frames, in constant memory, optionally paced.
//!
//! How the reading is done, and why:
//! - Each chunk is one positional read (`pread`) on tokio's blocking pool, started when hyper
//!   polls for more (it does while it still has data queued), so the disk works while hyper
//!   writes. A body therefore holds at most [`READ_AHEAD`] chunks, whatever the file size
//!   (hyper queues up to two for the socket: see [`CHUNK_SIZE`]).
//! - Buffers are allocated on the runtime thread, not the blocking-pool thread that fills them
//!   (see `read_chunk`).
//! - A dedicated reader thread per download feeding a bounded channel was considered and
//!   rejected: that thread would sit blocked in `blocking_send` for as long as a slow client
//!   takes, so 512 slow downloads would exhaust tokio's blocking pool (and with it DNS lookups
//!   and every other `spawn_blocking`). Here a slow client holds no thread at all; with chunks
//!   of [`CHUNK_SIZE`] the per-chunk hand-off cost is noise.
//! - After each read the handle is `fstat`ed: the Content-Length is already promised, so a file
//!   that shrinks or is modified in place makes the body fail (hyper then resets the stream),
//!   logged with `warn!`. A file unlinked or renamed over mid-download is not an error: the
//!   open handle still reads the old, complete version.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::metrics::SendfileMetrics;
use crate::body::{BoxError, ProxyBody};

/// Bytes per read. Sized for memory first: hyper asks for another chunk whenever less than
/// its write-buffer limit (64 KiB on our listeners) is queued, so with chunks of at least that
/// size a slow download holds two chunks in hyper, plus whatever reads this body has finished.
/// 100 downloads at 512 KB/s (`tests/sendfile_memory.rs`, bound 32 MiB) grew the RSS by
/// 54-58 MiB with 128 KiB and two reads ahead, 46 MiB with 128 KiB and one, 34 MiB with 64 KiB
/// and two, 24-26 MiB with 64 KiB and one started right after each chunk, and 19-26 MiB with
/// 64 KiB started on the next poll (what this file does). The price is CPU per byte: on one
/// pinned core (`bench/offload.sh`) about 620-670 ms/GiB over TLS (nginx: 690) and 480-570
/// ms/GiB plain, against 540-590 and 400-440 for 128 KiB with two ahead.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

/// Reads in flight (or done and waiting for hyper) per body. The next read starts when hyper
/// polls for more, which it does while it still has up to 64 KiB queued, so the read overlaps
/// the socket write; a read started earlier would only sit finished in a slow client's body.
pub(crate) const READ_AHEAD: usize = 1;

/// The largest read for a client that keeps up: a body starts at [`CHUNK_SIZE`] and, once
/// [`FAST_STREAK`] bytes in a row were each asked for within [`FAST_DRAIN`] of the previous
/// chunk (the socket took them at once: a fast client on a fast link), doubles its reads up to
/// this; one slow hand-off drops it back. The streak is longer than the kernel's socket send
/// buffer (4 MiB at most by default), which takes the first megabytes of even a slow client at
/// once; so a slow client never grows past [`CHUNK_SIZE`] and the memory bound above holds,
/// while a fast one pays fewer reads and wake-ups per byte.
pub(crate) const MAX_CHUNK_SIZE: usize = 256 * 1024;

/// Bytes that must drain fast, without a pause, before reads grow.
const FAST_STREAK: u64 = 8 << 20;

/// A poll for more this soon after the previous chunk means the client drains as fast as it
/// is fed.
const FAST_DRAIN: Duration = Duration::from_millis(2);

/// One piece of the body, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal bytes (multipart boundaries and part headers).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File { offset: u64, len: u64 },
}

impl Segment {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Segment::Bytes(bytes) => bytes.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the file looked like when the headers were built; any change after that breaks the
/// promise made by Content-Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub len: u64,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("file shrank while being sent")]
    Shrunk,
    #[error("file was modified while being sent")]
    Changed,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("reader task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A read scheduled or finished, kept in body order.
enum Pending {
    Ready(Bytes),
    Reading(JoinHandle<Result<Bytes, StreamError>>),
}

/// `X-Accel-Limit-Rate`: the body never runs ahead of `rate` bytes per second since its start.
struct Pace {
    rate: u64,
    started: Instant,
    sent: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    /// When the next chunk may go: after `sent` bytes at `rate`, counted from the start.
    fn due(&self) -> Instant {
        self.started + Duration::from_secs_f64(self.sent as f64 / self.rate as f64)
    }
}

/// Keeps `moodle_edge_offload_active_streams` honest: up on creation, down on drop, however
/// the body ends (finished, failed, or dropped by hyper when the client disconnects).
struct ActiveGuard(Arc<SendfileMetrics>);

impl ActiveGuard {
    fn new(metrics: Arc<SendfileMetrics>) -> Self {
        metrics.active_streams.inc();
        ActiveGuard(metrics)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_streams.dec();
    }
}

pub(crate) struct FileBody {
    /// Shared with the blocking reads; `pread` needs no exclusive access or seek position.
    file: Arc<File>,
    /// For the warning when the file changes under us.
    path: PathBuf,
    snapshot: Snapshot,
    /// Segments not yet scheduled for reading.
    plan: VecDeque<Segment>,
    /// Scheduled reads and literal bytes, in body order.
    pending: VecDeque<Pending>,
    /// Bytes not yet yielded: the exact size hint hyper checks against Content-Length.
    remaining: u64,
    /// Bytes per read; smaller when paced so the first chunk is not a long burst.
    chunk: u64,
    /// Whether `chunk` follows the client's pace (see [`MAX_CHUNK_SIZE`]); off when paced or
    /// when a size was set explicitly.
    adaptive: bool,
    /// When the last chunk was handed to hyper.
    last_yield: Option<Instant>,
    /// Bytes handed over fast, in a row (see [`FAST_STREAK`]).
    fast_streak: u64,
    pace: Option<Pace>,
    /// After an error the body is over: hyper will reset the connection.
    failed: bool,
    metrics: Arc<SendfileMetrics>,
    _active: ActiveGuard,
}

impl FileBody {
    /// `limit_rate`: bytes per second, `None` or 0 for unlimited.
    pub(crate) fn new(
        file: Arc<File>,
        path: PathBuf,
        snapshot: Snapshot,
        segments: Vec<Segment>,
        limit_rate: Option<u64>,
        metrics: Arc<SendfileMetrics>,
    ) -> Self {
        let remaining = segments.iter().map(Segment::len).sum();
        let pace = limit_rate.filter(|rate| *rate > 0).map(|rate| Pace {
            rate,
            started: Instant::now(),
            sent: 0,
            sleep: None,
        });
        // A quarter of a second's worth per read when paced, so pacing is smooth.
        let chunk = match &pace {
            Some(pace) => (pace.rate / 4).clamp(1024, CHUNK_SIZE as u64),
            None => CHUNK_SIZE as u64,
        };
        FileBody {
            file,
            path,
            snapshot,
            plan: segments.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: VecDeque::with_capacity(READ_AHEAD + 2),
            remaining,
            chunk,
            adaptive: pace.is_none(),
            last_yield: None,
            fast_streak: 0,
            pace,
            failed: false,
            _active: ActiveGuard::new(metrics.clone()),
            metrics,
        }
    }

    pub(crate) fn into_proxy_body(self) -> ProxyBody {
        self.map_err(|err| Box::new(err) as BoxError).boxed_unsync()
    }

    /// Schedules reads until [`READ_AHEAD`] are in flight or the plan is empty.
    fn top_up(&mut self) {
        while self.reads_in_flight() < READ_AHEAD {
            let Some(segment) = self.plan.pop_front() else {
                return;
            };
            match segment {
                Segment::Bytes(bytes) => self.pending.push_back(Pending::Ready(bytes)),
                Segment::File { offset, len } => {
                    let n = len.min(self.chunk);
                    if len > n {
                        self.plan.push_front(Segment::File {
                            offset: offset + n,
                            len: len - n,
                        });
                    }
                    let file = self.file.clone();
                    let snapshot = self.snapshot;
                    // Allocated here, on the runtime thread that will also free it once hyper
                    // has written it; see `read_chunk`.
                    let buf = vec![0u8; n as usize];
                    let handle = tokio::task::spawn_blocking(move || {
                        read_chunk(&file, offset, buf, snapshot)
                    });
                    self.pending.push_back(Pending::Reading(handle));
                }
            }
        }
    }

    fn reads_in_flight(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p, Pending::Reading(_)))
            .count()
    }

    /// Waits until pacing lets the next chunk go.
    fn poll_pace(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pace) = &mut self.pace else {
            return Poll::Ready(());
        };
        let due = pace.due();
        if due <= Instant::now() {
            pace.sleep = None;
            return Poll::Ready(());
        }
        let sleep = pace
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                pace.sleep = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Grows the read size while the client drains at once, back to the base after a slow
    /// hand-off. Called when hyper asks for the next chunk.
    fn adapt_chunk(&mut self) {
        if !self.adaptive {
            return;
        }
        let Some(last) = self.last_yield else {
            return;
        };
        if last.elapsed() <= FAST_DRAIN {
            self.fast_streak += self.chunk;
            if self.fast_streak >= FAST_STREAK {
                self.chunk = (self.chunk * 2).min(MAX_CHUNK_SIZE as u64);
            }
        } else {
            self.fast_streak = 0;
            self.chunk = CHUNK_SIZE as u64;
        }
    }

    fn yielded(&mut self, bytes: &Bytes) {
        if self.adaptive {
            self.last_yield = Some(Instant::now());
        }
        let n = bytes.len() as u64;
        self.remaining = self.remaining.saturating_sub(n);
        self.metrics.bytes_sent.inc_by(n);
        if let Some(pace) = &mut self.pace {
            pace.sent += n;
        }
    }

    fn fail(&mut self, err: StreamError) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        self.failed = true;
        self.pending.clear();
        self.plan.clear();
        tracing::warn!(
            path = %self.path.display(),
            error = %err,
            unsent = self.remaining,
            "offloaded file failed mid-stream; the response is cut short"
        );
        Poll::Ready(Some(Err(err)))
    }
}

/// The blocking part: fill `buf` from `offset`, then check the file is unchanged.
///
/// The buffer comes from the caller, not from this blocking-pool thread: a chunk allocated on
/// a pool thread and freed on a runtime thread strands memory in the pool thread's allocator
/// heap (mimalloc's per-thread heaps, glibc's per-thread arenas), and with dozens of pool
/// threads that grew the RSS of 100 slow downloads well past the whole of their chunks.
fn read_chunk(
    file: &File,
    offset: u64,
    mut buf: Vec<u8>,
    snapshot: Snapshot,
) -> Result<Bytes, StreamError> {
    let len = buf.len();
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => return Err(StreamError::Shrunk),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(StreamError::Io(err)),
        }
    }
    let meta = file.metadata()?;
    if meta.len() < snapshot.len {
        return Err(StreamError::Shrunk);
    }
    if meta.len() != snapshot.len || meta.modified().ok() != snapshot.mtime {
        return Err(StreamError::Changed);
    }
    Ok(Bytes::from(buf))
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if this.reads_in_flight() == 0 {
            this.adapt_chunk();
        }
        this.top_up();
        if this.pending.is_empty() {
            return Poll::Ready(None);
        }
        if this.poll_pace(cx).is_pending() {
            return Poll::Pending;
        }
        let bytes = match this.pending.front_mut() {
            None => return Poll::Ready(None),
            Some(Pending::Ready(bytes)) => std::mem::take(bytes),
            Some(Pending::Reading(handle)) => match Pin::new(handle).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(bytes))) => bytes,
                Poll::Ready(Ok(Err(err))) => return this.fail(err),
                Poll::Ready(Err(join)) => return this.fail(StreamError::Join(join)),
            },
        };
        this.pending.pop_front();
        this.yielded(&bytes);
        // The next read starts on the next poll, not now: hyper polls again as soon as less
        // than its write-buffer limit is queued, so the read still overlaps the socket write,
        // and a slow client's body holds no finished chunk while hyper's queue is full.
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.plan.is_empty() && self.pending.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn metrics() -> Arc<SendfileMetrics> {
        Arc::new(SendfileMetrics::unregistered().unwrap())
    }

    fn fixture(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        tmp.flush().unwrap();
        (tmp, data)
    }

    fn body_for(
        tmp: &tempfile::NamedTempFile,
        segments: Vec<Segment>,
        rate: Option<u64>,
        m: Arc<SendfileMetrics>,
    ) -> FileBody {
        let file = File::open(tmp.path()).unwrap();
        let meta = file.metadata().unwrap();
        let snapshot = Snapshot {
            len: meta.len(),
            mtime: meta.modified().ok(),
        };
        FileBody::new(
            Arc::new(file),
            tmp.path().to_path_buf(),
            snapshot,
            segments,
            rate,
            m,
        )
    }

    async fn collect(body: FileBody) -> Result<Vec<u8>, StreamError> {
        let collected = body.collect().await?;
        Ok(collected.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn whole_file_in_chunks() {
        let len = CHUNK_SIZE * 3 + 17;
        let (tmp, data) = fixture(len);
        let m = metrics();
        let body = body_for(
            &tmp,
            vec![Segment::File {
                offset: 0,
                len: len as u64,
            }],
            None,
            m.clone(),
        );
        assert_eq!(body.size_hint().exact(), Some(len as u64));
        assert_eq!(m.active_streams.get(), 1);
        assert_eq!(collect(body).await.unwrap(), data);
        assert_eq!(m.active_streams.get(), 0);
        assert_eq!(m.bytes_sent.get(), len as u64);
    }

    /// Chunk sizes a consumer sees when it asks for the next frame after `pause`.
    async fn chunk_sizes(len: usize, pause: Duration) -> Vec<usize> {
        use http_body_util::BodyExt;
        let (tmp, _) = fixture(len);
        let mut body = body_for(
            &tmp,
            vec![Segment::File {
                offset: 0,
                len: len as u64,
            }],
            None,
            metrics(),
        );
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            if !pause.is_zero() {
                tokio::time::advance(pause).await;
            }
        }
        sizes
    }

    // Paused clock (as the two below): hand-offs are timed in virtual time, so a loaded
    // machine cannot make a fast client look slow.
    #[tokio::test(start_paused = true)]
    async fn reads_grow_for_a_client_that_keeps_up() {
        let sizes = chunk_sizes(16 << 20, Duration::ZERO).await;
        assert_eq!(sizes[0], CHUNK_SIZE);
        assert!(sizes.contains(&MAX_CHUNK_SIZE), "{sizes:?}");
        assert!(sizes.iter().all(|s| *s <= MAX_CHUNK_SIZE));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_stay_small_for_a_slow_client() {
        let sizes = chunk_sizes(12 * CHUNK_SIZE, Duration::from_millis(10)).await;
        assert!(sizes.iter().all(|s| *s == CHUNK_SIZE), "{sizes:?}");
    }

    #[tokio::test]
    async fn segments_in_order() {
        let (tmp, data) = fixture(1000);
        let segments = vec![
            Segment::Bytes(Bytes::from_static(b"<")),
            Segment::File { offset: 10, len: 5 },
            Segment::Bytes(Bytes::from_static(b"|")),
            Segment::File { offset: 0, len: 2 },
            Segment::Bytes(Bytes::from_static(b">")),
        ];
        let out = collect(body_for(&tmp, segments, None, metrics()))
            .await
            .unwrap();
        let mut want = b"<".to_vec();
        want.extend_from_slice(&data[10..15]);
        want.push(b'|');
        want.extend_from_slice(&data[0..2]);
        want.push(b'>');
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn empty_body_ends_at_once() {
        let (tmp, _) = fixture(0);
        let body = body_for(&tmp, vec![], None, metrics());
        assert!(body.is_end_stream());
        assert!(collect(body).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn truncated_file_fails_the_body() {
        let len = CHUNK_SIZE * 4;
        let (tmp, _) = fixture(len);
        let mut body = body_for(
            &tmp,
            vec![Segment::File {
                offset: 0,
                len: len as u64,
            }],
            None,
            metrics(),
        );
        // The first frame was read before the truncation.
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), CHUNK_SIZE);
        tmp.as_file().set_len(10).unwrap();
        let mut saw_error = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                saw_error = true;
                break;
            }
        }
        assert!(saw_error);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_body_releases_the_gauge() {
        let (tmp, _) = fixture(CHUNK_SIZE * 4);
        let m = metrics();
        let mut body = body_for(
            &tmp,
            vec![Segment::File {
                offset: 0,
                len: (CHUNK_SIZE * 4) as u64,
            }],
            None,
            m.clone(),
        );
        let _ = body.frame().await;
        assert_eq!(m.active_streams.get(), 1);
        drop(body);
        assert_eq!(m.active_streams.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_holds_the_rate() {
        // 40 kB at 80 kB/s: 20 kB chunks (a quarter second's worth), the second at 0.25 s.
        let len = 40_000u64;
        let (tmp, data) = fixture(len as usize);
        let started = Instant::now();
        let body = body_for(
            &tmp,
            vec![Segment::File { offset: 0, len }],
            Some(80_000),
            metrics(),
        );
        assert_eq!(collect(body).await.unwrap(), data);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1500), "{elapsed:?}");
    }
}
