//! A request body as the stages see it: untouched (nearly every request, no cost), peeked at
//! (a bounded prefix read and kept, then replayed before the rest), or replaced by a stage.

use std::mem;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use thiserror::Error;

use crate::body::replay::{read_prefix, Prefix, ReplayBody};
use crate::body::{self, ProxyBody};
use crate::proxy::body::{BodyFate, GuardedBody};

/// Why a body could not be peeked at.
#[derive(Debug, Error)]
pub enum PeekError {
    #[error("the request body is larger than allowed")]
    TooLarge,
    #[error("the client stopped sending its body")]
    Idle,
    #[error("the request body could not be read: {0}")]
    Broken(body::BoxError),
}

/// How a request body may be read: the size limit (`server.limits.max_body_size`) and the idle
/// timeout (`server.limits.client_body_timeout`) hold for peeks as for forwarding.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max: u64,
    pub idle: Duration,
}

static NOTHING: Bytes = Bytes::new();

struct Peeked {
    prefix: Prefix,
    /// `prefix` as one buffer, for the stages that read it.
    contiguous: Bytes,
    rest: GuardedBody<Incoming>,
    fate: Arc<BodyFate>,
}

/// A request body that stages may peek at and that still goes upstream byte for byte.
pub struct RequestBody {
    inner: Inner,
    limits: BodyLimits,
}

enum Inner {
    /// Not looked at: goes on as it came (nearly every request).
    Untouched(Incoming),
    /// Peeked: the prefix read so far, then the guarded rest of the client's body. Boxed:
    /// rare, and much larger than an untouched body.
    Peeked(Box<Peeked>),
    /// A stage's replacement, sent instead of the client's body.
    Replaced(Bytes),
}

impl RequestBody {
    pub fn new(body: Incoming, limits: BodyLimits) -> Self {
        RequestBody {
            inner: Inner::Untouched(body),
            limits,
        }
    }

    /// A request without a body.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        RequestBody {
            inner: Inner::Replaced(Bytes::new()),
            limits: BodyLimits {
                max: 0,
                idle: Duration::from_secs(1),
            },
        }
    }

    /// True when there is nothing (left) to send upstream.
    pub fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Untouched(b) => b.is_end_stream(),
            Inner::Peeked(p) => {
                p.prefix.chunks.is_empty()
                    && p.prefix.trailers.is_none()
                    && (p.prefix.ended || p.rest.is_end_stream())
            }
            Inner::Replaced(b) => b.is_empty(),
        }
    }

    /// Reads up to `limit` bytes (less if the body is shorter; a frame may take it a little
    /// past), keeps them for the upstream, and returns what has been read so far. A longer body
    /// is not an error: [`complete`](Self::complete) says whether the prefix is all of it.
    pub async fn peek(&mut self, limit: usize) -> Result<&Bytes, PeekError> {
        if let Inner::Untouched(_) = self.inner {
            if let Inner::Untouched(incoming) =
                mem::replace(&mut self.inner, Inner::Replaced(Bytes::new()))
            {
                let (rest, fate) =
                    GuardedBody::new(incoming, Some(self.limits.max), self.limits.idle);
                self.inner = Inner::Peeked(Box::new(Peeked {
                    prefix: Prefix::default(),
                    contiguous: Bytes::new(),
                    rest,
                    fate,
                }));
            }
        }
        match &mut self.inner {
            Inner::Peeked(p) => {
                let Peeked {
                    prefix,
                    contiguous,
                    rest,
                    fate,
                } = &mut **p;
                if prefix.len < limit && !prefix.ended {
                    if let Err(e) = read_prefix(rest, prefix, limit).await {
                        return Err(if fate.too_large() {
                            PeekError::TooLarge
                        } else if fate.timed_out() {
                            PeekError::Idle
                        } else {
                            PeekError::Broken(e)
                        });
                    }
                    *contiguous = prefix.contiguous();
                }
                Ok(contiguous)
            }
            Inner::Replaced(bytes) => Ok(bytes),
            // Made `Peeked` above; an empty prefix keeps the type honest without a panic.
            Inner::Untouched(_) => Ok(&NOTHING),
        }
    }

    /// True when the whole body has been read by [`peek`](Self::peek) (or replaced).
    pub fn complete(&self) -> bool {
        match &self.inner {
            Inner::Untouched(b) => b.is_end_stream(),
            Inner::Peeked(p) => p.prefix.ended,
            Inner::Replaced(_) => true,
        }
    }

    /// Sends `body` upstream instead of the client's (its Content-Length is set to match).
    pub fn replace(&mut self, body: Bytes) {
        self.inner = Inner::Replaced(body);
    }

    /// The replacement's length, when a stage replaced the body.
    pub(crate) fn replaced_len(&self) -> Option<usize> {
        match &self.inner {
            Inner::Replaced(b) => Some(b.len()),
            _ => None,
        }
    }

    /// Takes the body out, leaving an empty one (the upstream interface borrows the request
    /// and takes its body only when it goes the pooled way).
    pub(crate) fn take(&mut self) -> RequestBody {
        RequestBody {
            inner: mem::replace(&mut self.inner, Inner::Replaced(Bytes::new())),
            limits: self.limits,
        }
    }

    /// The body as it goes upstream, with the fate of the client's part of it (for the
    /// forward stage's error reporting) when there is one.
    pub(crate) fn into_upstream(self) -> (ProxyBody, Option<Arc<BodyFate>>) {
        if self.is_end_stream() {
            return (body::empty(), None);
        }
        match self.inner {
            Inner::Untouched(incoming) => {
                let (guarded, fate) =
                    GuardedBody::new(incoming, Some(self.limits.max), self.limits.idle);
                (body::boxed(guarded), Some(fate))
            }
            Inner::Peeked(p) => {
                let Peeked {
                    prefix, rest, fate, ..
                } = *p;
                (body::boxed(ReplayBody::new(prefix, rest)), Some(fate))
            }
            Inner::Replaced(bytes) => (body::full(bytes), None),
        }
    }
}
