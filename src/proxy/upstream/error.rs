//! What can go wrong on the way to the upstream and back to its response head, said
//! precisely enough to pick the status and the metric label; and how long the exchange took.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::direct::DirectError;
use crate::proxy::body::BodyFate;

#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("the upstream exchange failed: {0}")]
    Protocol(String),
    #[error("the request body is larger than allowed")]
    BodyTooLarge,
    #[error("the client stopped sending its body")]
    ClientBodyTimeout,
    #[error("the client went away while sending its body")]
    ClientGone,
    #[error("the request body's framing is malformed")]
    MalformedBody,
    #[error("cannot build the upstream URI: {0}")]
    BadUri(String),
    #[error("the upstream switched protocols, which the request did not ask for")]
    UnexpectedSwitch,
}

impl ForwardError {
    /// The `kind` label of moodle_edge_upstream_errors_total; None for client-side faults.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ForwardError::Connect(_) => Some("connect"),
            ForwardError::Timeout(_) => Some("timeout"),
            ForwardError::Protocol(_) | ForwardError::UnexpectedSwitch => Some("protocol"),
            _ => None,
        }
    }
}

/// How long an exchange took, up to the response head.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From handing the request on to the response head.
    pub total: Duration,
    /// The upstream's share: from the end of the request body to the response head.
    pub upstream: Duration,
    /// When the response head (or the failure) came.
    pub ended: Instant,
}

pub(super) fn classify_direct(e: &DirectError) -> ForwardError {
    if e.is_connect() {
        ForwardError::Connect(error_chain(e))
    } else {
        ForwardError::Protocol(error_chain(e))
    }
}

pub(super) fn classify(
    e: hyper_util::client::legacy::Error,
    fate: Option<&BodyFate>,
) -> ForwardError {
    if let Some(fate) = fate {
        if fate.too_large() {
            return ForwardError::BodyTooLarge;
        }
        if fate.timed_out() {
            return ForwardError::ClientBodyTimeout;
        }
        if fate.broken() {
            return ForwardError::ClientGone;
        }
        if fate.malformed() {
            return ForwardError::MalformedBody;
        }
    }
    if e.is_connect() {
        return ForwardError::Connect(error_chain(&e));
    }
    ForwardError::Protocol(error_chain(&e))
}

/// "outer: inner: innermost" — hyper's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
