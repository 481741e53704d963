//! A line-oriented log sink (access and audit logs): lines are handed to a dedicated writer
//! thread through a bounded channel, so a slow terminal or disk never stalls a request.
//! When the channel is full the line is dropped and counted, rather than blocking the proxy.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::observe::config::{SinkConfig, SinkTarget};

const QUEUE_LINES: usize = 16 * 1024;

#[derive(Clone)]
pub struct LineSink {
    tx: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
}

impl LineSink {
    /// A sink that writes nothing (target: off).
    pub fn off() -> Self {
        LineSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn open(cfg: &SinkConfig) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match cfg.target {
            SinkTarget::Off => return Ok(LineSink::off()),
            SinkTarget::Stdout => Box::new(io::stdout()),
            SinkTarget::File => {
                let path = cfg.path.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "target: file needs a path")
                })?;
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        Ok(LineSink::from_writer(writer))
    }

    /// A sink over any writer (tests use a buffer).
    pub fn from_writer(writer: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("moodle-edge-log".into())
            .spawn(move || write_lines(rx, writer))
            .map(|_| LineSink {
                tx: Some(tx),
                dropped: Arc::new(AtomicU64::new(0)),
            })
            .unwrap_or_else(|_| LineSink::off())
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line (without its newline).
    pub fn write(&self, line: String) {
        if let Some(tx) = &self.tx {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines(rx: Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        // Batch what is already queued, then flush once: one write(2) per burst, not per line.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}
