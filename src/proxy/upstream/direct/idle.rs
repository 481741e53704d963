//! The idle keep-alive connections to the upstream, most recently used first out (it is the
//! one least likely to have been closed by the upstream's keep-alive timeout). Shared by the
//! pool, which takes them, and the bodies, which give theirs back.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::Conn;

struct Idle {
    conn: Conn,
    /// When the connection went idle.
    since: Instant,
}

pub(super) struct IdleConns {
    idle: Mutex<Vec<Idle>>,
    /// `upstream.pool_max_idle_per_host`: connections beyond it are closed when given back.
    max_idle: usize,
    /// `upstream.pool_idle_timeout`: older idle connections are closed, not used.
    idle_timeout: Duration,
}

impl IdleConns {
    pub(super) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        IdleConns {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The list. A panic while it was held (none is known: nothing in here panics) must not
    /// turn pooling off for good, so a poisoned lock is taken over: the list is valid at every
    /// point a panic could leave it.
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|poisoned| {
            tracing::warn!("the direct path's pool lock was poisoned; recovered");
            poisoned.into_inner()
        })
    }

    /// The most recently used idle connection that is still open and fresh.
    pub(super) fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout
                && still_open(&entry.conn.io)
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection, idle since `since` (the clock is read when None).
    pub(super) fn checkin(&self, conn: Conn, since: Option<Instant>) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: since.unwrap_or_else(Instant::now),
            });
        }
    }

    /// Closes idle connections that timed out or that the upstream closed; returns how many.
    pub(super) fn reap(&self) -> usize {
        let mut idle = self.lock();
        let before = idle.len();
        idle.retain(|e| e.since.elapsed() < self.idle_timeout && still_open(&e.conn.io));
        before - idle.len()
    }
}

/// An idle connection must have nothing to read: data or end-of-file there means the upstream
/// closed it (or sent garbage). Readiness is what the reactor last saw, so this costs a system
/// call only when the reactor says readable.
fn still_open(io: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}
