//! A line-oriented log sink (access and audit logs), buffered as nginx's `access_log ...
//! buffer=64k flush=1s`: a request formats its line straight into a batch buffer of its worker
//! thread (no allocation per line), and only whole batches go to a dedicated writer thread.
//!
//! The phases of a line:
//! 1. format: [`LineSink::write_with`] appends the line to its worker's batch (one short,
//!    practically uncontended lock: each worker thread has its own shard).
//! 2. hand over: a batch that reaches [`BATCH_BYTES`] is swapped for an empty one and queued to
//!    the writer, which is woken once per batch, not once per line.
//! 3. sweep: every [`FLUSH_EVERY`] (and when asked: SIGTERM, exit) the writer takes whatever
//!    the batches hold, so a line is on disk within a second even when traffic is light.
//! 4. write: one `write(2)` per batch.
//! 5. close: when the last handle goes (a reload replaced the sink) or at exit
//!    ([`close_all`]), the writer writes everything left and stops.
//!
//! A slow disk or terminal never stalls a request: when [`QUEUED_BATCHES`] batches already wait
//! for the writer, a request does not wait; its line is dropped and counted
//! ([`dropped_total`], the `moodle_edge_log_lines_dropped` metric). Memory is bounded by the
//! batches in existence: the queue, one being written, one per shard and a few spares.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::observe::config::{SinkConfig, SinkTarget};

/// A batch is handed to the writer once it holds this much (nginx's `buffer=64k`).
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// A batch's capacity: room for the line that crosses [`BATCH_BYTES`] without growing.
const BATCH_CAPACITY: usize = BATCH_BYTES + 16 * 1024;
/// Full batches that may wait for the writer before lines are dropped (1 MiB of lines).
pub(crate) const QUEUED_BATCHES: usize = 16;
/// Empty batches kept for reuse; more are freed.
const SPARE_BATCHES: usize = 4;
/// How often the writer takes partly filled batches (lines reach the disk within a second).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// At most this many shards (worker threads beyond it share).
const MAX_SHARDS: usize = 16;

/// Lines dropped by every sink of the process, reloads included (the metric).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Every writer thread still running, so the process can wait for them at exit.
static WRITERS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
/// Hands each thread that writes lines its own shard number.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard (modulo a sink's shard count).
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A handle to one log sink; clones share it. Cheap to clone and to test for `enabled`.
#[derive(Clone)]
pub struct LineSink {
    /// None for `target: off`: nothing is formatted at all.
    handle: Option<Arc<Handle>>,
}

/// The last clone of a sink to go closes it (its writer writes what is left and stops).
struct Handle {
    /// What the requests and the writer share.
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.close();
    }
}

/// The batches, shared by the requests that fill them and the writer that empties them.
struct Core {
    /// One batch per worker thread (by [`SHARD`]), so workers do not contend for one lock.
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Emptied batches the writer gave back, swapped in for full ones without allocating.
    spares: Mutex<Vec<Vec<u8>>>,
    /// Full batches to the writer; bounded, so a stalled writer costs lines, not memory. An
    /// empty batch is a wake-up (sweep now, or close).
    queue: SyncSender<Vec<u8>>,
    /// Asked to sweep the shards now (SIGTERM).
    sweep_now: AtomicBool,
    /// No more lines will come: write what is left and stop.
    closing: AtomicBool,
    /// Lines this sink dropped (the process-wide total is [`DROPPED_TOTAL`]).
    dropped: AtomicU64,
}

/// A running writer, as [`close_all`] needs it.
struct Registered {
    /// To ask it to close.
    core: Arc<Core>,
    /// Says (by closing) that the writer has written everything and stopped.
    done: Receiver<()>,
}

impl LineSink {
    /// A sink that writes nothing (target: off).
    pub fn off() -> Self {
        LineSink { handle: None }
    }

    pub fn open(cfg: &SinkConfig) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match cfg.target {
            SinkTarget::Off => return Ok(LineSink::off()),
            SinkTarget::Stdout => Box::new(Stdout),
            SinkTarget::File => {
                let path = cfg.path.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "target: file needs a path")
                })?;
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        LineSink::from_writer(writer)
    }

    /// A sink over any writer (tests use a buffer).
    pub fn from_writer(writer: Box<dyn Write + Send>) -> io::Result<Self> {
        let shard_count = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, MAX_SHARDS);
        let (queue, batches) = mpsc::sync_channel(QUEUED_BATCHES);
        let core = Arc::new(Core {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Vec::with_capacity(BATCH_CAPACITY)))
                .collect(),
            spares: Mutex::new(Vec::new()),
            queue,
            sweep_now: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let (done_tx, done) = mpsc::channel();
        let writer_core = core.clone();
        std::thread::Builder::new()
            .name("moodle-edge-log".into())
            .spawn(move || {
                Writer {
                    core: writer_core,
                    batches,
                    out: writer,
                }
                .run();
                drop(done_tx);
            })?;
        let mut writers = lock(&WRITERS);
        writers.retain(|w| matches!(w.done.try_recv(), Err(mpsc::TryRecvError::Empty)));
        writers.push(Registered {
            core: core.clone(),
            done,
        });
        Ok(LineSink {
            handle: Some(Arc::new(Handle { core })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.handle.is_some()
    }

    /// Appends one line: `format` writes it (without its newline) into the batch. A line that
    /// fails to format is taken back whole; one that finds the writer too far behind is dropped
    /// and counted.
    pub fn write_with(&self, format: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        let Some(handle) = &self.handle else {
            return;
        };
        let core = &handle.core;
        let mut batch = lock(&core.shards[shard_index() % core.shards.len()]);
        if batch.len() >= BATCH_BYTES && !core.hand_over(&mut batch) {
            drop(batch);
            core.count_dropped(1);
            return;
        }
        let start = batch.len();
        match format(&mut batch) {
            Ok(()) => batch.push(b'\n'),
            Err(e) => {
                batch.truncate(start);
                drop(batch);
                tracing::warn!(error = %e, "a log line could not be formatted");
                return;
            }
        }
        if batch.len() >= BATCH_BYTES {
            // When the queue is full this batch stays full; the next line tries again.
            core.hand_over(&mut batch);
        }
    }

    /// Lines this sink dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.handle
            .as_ref()
            .map_or(0, |h| h.core.dropped.load(Ordering::Relaxed))
    }
}

/// Lines dropped by every sink this process opened (reloads included).
pub(crate) fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Asks every writer to take its batches now (SIGTERM: what was logged before the signal is
/// written at once, not after the drain).
pub(crate) fn flush_all() {
    for w in lock(&WRITERS).iter() {
        w.core.sweep_now.store(true, Ordering::Release);
        w.core.wake();
    }
}

/// At exit: every writer writes what it holds and stops; waits up to `timeout` in all (a writer
/// stuck on a stalled terminal is left behind, the process exits anyway).
pub fn close_all(timeout: Duration) {
    close_and_wait(std::mem::take(&mut *lock(&WRITERS)), timeout);
}

fn close_and_wait(writers: Vec<Registered>, timeout: Duration) {
    for w in &writers {
        w.core.close();
    }
    let deadline = Instant::now() + timeout;
    for w in &writers {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(RecvTimeoutError::Timeout) = w.done.recv_timeout(left) {
            break;
        }
    }
}

impl Core {
    /// Swaps a full batch for an empty one and queues it; false (the batch kept) when the
    /// writer already has [`QUEUED_BATCHES`] waiting.
    fn hand_over(&self, batch: &mut Vec<u8>) -> bool {
        let spare = lock(&self.spares)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
        let full = std::mem::replace(batch, spare);
        match self.queue.try_send(full) {
            Ok(()) => true,
            Err(TrySendError::Full(full) | TrySendError::Disconnected(full)) => {
                let spare = std::mem::replace(batch, full);
                self.give_back(spare);
                false
            }
        }
    }

    fn give_back(&self, mut batch: Vec<u8>) {
        batch.clear();
        let mut spares = lock(&self.spares);
        if spares.len() < SPARE_BATCHES && batch.capacity() >= BATCH_BYTES {
            spares.push(batch);
        }
    }

    fn count_dropped(&self, lines: u64) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        DROPPED_TOTAL.fetch_add(lines, Ordering::Relaxed);
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake();
    }

    /// An empty batch wakes the writer; a full queue means it is awake anyway.
    fn wake(&self) {
        let _ = self.queue.try_send(Vec::new());
    }
}

/// The writer thread: writes batches as they come and sweeps the shards on its timer.
struct Writer {
    /// The batches it empties.
    core: Arc<Core>,
    /// Full batches (and wake-ups) from the requests.
    batches: Receiver<Vec<u8>>,
    /// The file or standard output.
    out: Box<dyn Write + Send>,
}

impl Writer {
    fn run(mut self) {
        let mut next_sweep = Instant::now() + FLUSH_EVERY;
        loop {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            match self.batches.recv_timeout(wait) {
                Ok(batch) => self.write(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let closing = self.core.closing.load(Ordering::Acquire);
            if closing || self.core.sweep_now.swap(false, Ordering::AcqRel) {
                while let Ok(batch) = self.batches.try_recv() {
                    self.write(batch);
                }
                self.sweep();
                next_sweep = Instant::now() + FLUSH_EVERY;
            } else if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + FLUSH_EVERY;
            }
            if closing {
                break;
            }
        }
        let _ = self.out.flush();
    }

    /// Takes every shard's lines, swapping an empty batch in under the shard's lock.
    fn sweep(&mut self) {
        let core = self.core.clone();
        for shard in core.shards.iter() {
            let taken = {
                let mut batch = lock(shard);
                if batch.is_empty() {
                    continue;
                }
                let spare = lock(&core.spares)
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
                std::mem::replace(&mut *batch, spare)
            };
            self.write(taken);
        }
        let _ = self.out.flush();
    }

    fn write(&mut self, batch: Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.out.write_all(&batch) {
            let lines = memchr::memchr_iter(b'\n', &batch).count() as u64;
            self.core.count_dropped(lines);
            tracing::warn!(error = %e, lines, "log lines could not be written");
        }
        self.core.give_back(batch);
    }
}

/// Standard output, locked per batch: a batch is written whole (one `write(2)` when it ends
/// in a newline), between the event log's lines, never through them.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

fn shard_index() -> usize {
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            s.set(Some(i));
            i
        }
    })
}

/// A poisoned lock still guards plain bytes: a panic elsewhere must not silence the logs.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;

    /// A writer into memory; `stall` holds every write until released.
    #[derive(Clone, Default)]
    struct Memory {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Memory {
        fn stalled() -> Self {
            let m = Memory::default();
            *m.gate.0.lock().unwrap() = true;
            m
        }
        fn release(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Memory {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (stalled, cv) = &*self.gate;
            let mut s = stalled.lock().unwrap();
            while *s {
                s = cv.wait(s).unwrap();
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn line(sink: &LineSink, text: &str) {
        sink.write_with(|b| {
            b.extend_from_slice(text.as_bytes());
            Ok(())
        });
    }

    #[test]
    fn a_few_lines_are_written_by_the_timer_in_one_write() {
        let mem = Memory::default();
        let sink = LineSink::from_writer(Box::new(mem.clone())).unwrap();
        for i in 0..10 {
            line(&sink, &format!("line {i}"));
        }
        wait_until("the timer's sweep", || mem.text().lines().count() == 10);
        assert!(
            mem.writes.load(Ordering::SeqCst) < 10,
            "batched, not a write per line"
        );
        assert!(mem.text().starts_with("line 0\nline 1\n"));
    }

    #[test]
    fn a_line_that_fails_to_format_leaves_nothing() {
        let mem = Memory::default();
        let sink = LineSink::from_writer(Box::new(mem.clone())).unwrap();
        line(&sink, "before");
        sink.write_with(|b| {
            b.extend_from_slice(b"half a li");
            Err(io::Error::other("no"))
        });
        line(&sink, "after");
        drop(sink);
        wait_until("the close", || mem.text().lines().count() == 2);
        assert_eq!(mem.text(), "before\nafter\n");
    }

    #[test]
    fn full_batches_go_without_the_timer_and_a_stalled_writer_drops_and_counts() {
        let mem = Memory::stalled();
        let sink = LineSink::from_writer(Box::new(mem.clone())).unwrap();
        let text = "x".repeat(1000);
        // Far more than the queue holds while the writer cannot write.
        let sent = (QUEUED_BATCHES + 4) * BATCH_BYTES / 1000;
        for _ in 0..sent {
            line(&sink, &text);
        }
        let dropped = sink.dropped();
        assert!(dropped > 0, "a stalled writer must cost lines, not memory");
        assert!(dropped_total() >= dropped);
        mem.release();
        drop(sink);
        wait_until("everything kept", || {
            mem.text().lines().count() as u64 == sent as u64 - dropped
        });
        assert!(mem.text().lines().all(|l| l == text), "no line torn");
    }

    #[test]
    fn closing_at_exit_writes_what_is_buffered() {
        let mem = Memory::default();
        let sink = LineSink::from_writer(Box::new(mem.clone())).unwrap();
        line(&sink, "last words");
        // close_all's work on this sink's writer alone (other tests' sinks stay open). The
        // sink is still open (a request could still hold it): closing does not wait for it to
        // go, and the line is written before the close returns.
        let core = sink.handle.as_ref().unwrap().core.clone();
        let mine = {
            let mut writers = lock(&WRITERS);
            let at = writers
                .iter()
                .position(|w| Arc::ptr_eq(&w.core, &core))
                .unwrap();
            writers.swap_remove(at)
        };
        close_and_wait(vec![mine], Duration::from_secs(10));
        assert_eq!(mem.text(), "last words\n");
        drop(sink);
    }
}
