//! The request context: what the stages learn about one request and the connection it came on.
//! Every stage depends on this module; none depends on the pipeline that calls them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::proxy::headers::ForwardHeaders;
use crate::proxy::upstream::error::ForwardError;
use crate::route::Route;
use crate::timer::head_clock::HeadClock;
use crate::timer::response_timer::ResponseTimer;

/// What the accept stage knows about the connection a request came on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP address as a header value, formatted once for the connection's requests
    /// (X-Forwarded-For and X-Real-IP).
    pub peer_value: HeaderValue,
    pub tls: bool,
    /// Index of the `server.listen` entry.
    pub listener: usize,
    /// The connection's header-read timeout clock (requests in flight count against it).
    pub head_clock: Arc<HeadClock>,
    /// The connection's reusable upstream response timer.
    pub response_timer: ResponseTimer,
}

impl ConnInfo {
    /// An IP address as a header value (an address's text is always a valid one).
    pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
        HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
    }
}

/// A request's X-Request-Id, kept as the header value it is sent as (to the upstream and back
/// to the client), which is also its text: visible ASCII, checked once when it was made.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    pub(crate) fn as_str(&self) -> &str {
        // Made from visible ASCII only (see `from_client` and `new`), so this cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The client's (or a front proxy's) id when it is sane: 1-128 characters of
    /// `[A-Za-z0-9._:@-]`, so it can be logged and echoed without escaping.
    pub(crate) fn from_client(value: &HeaderValue) -> Option<RequestId> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes.iter().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
            });
        sane.then(|| RequestId(value.clone()))
    }

    /// 128 random bits as 32 lower-case hex digits, from a per-thread SmallRng seeded from the
    /// thread's ChaCha generator: a request id is a correlation handle, not a secret, and the
    /// ChaCha generator behind `rand::random` cost more than the rest of the request id
    /// handling together. Two digits at a time from a table, written into an array, allocated
    /// once.
    pub(crate) fn new() -> RequestId {
        use rand::{Rng, SeedableRng};
        thread_local! {
            static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
                std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        const PAIRS: [[u8; 2]; 256] = {
            let mut t = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
                i += 1;
            }
            t
        };
        let bits: u128 = IDS.with(|rng| rng.borrow_mut().random());
        let mut out = [0u8; 32];
        for (pair, b) in out.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
            pair.copy_from_slice(&PAIRS[usize::from(b)]);
        }
        // Owned by a reference-counted allocation from the start: the clones for the upstream
        // request and the response are then counts, where a copied value would allocate again
        // on its first clone.
        RequestId(
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        )
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request headers a stage wants set or removed on the way upstream (identity headers after a
/// login, a replaced body's framing). Both upstream clients apply them, in one place
/// (`proxy::upstream`), after the forwarding headers. Empty for nearly every request, and then
/// free: nothing is allocated until a stage adds something.
#[derive(Debug, Default)]
pub struct UpstreamHeaders {
    /// `None` as the value removes the header.
    changes: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl UpstreamHeaders {
    /// Sets `name` to `value`, replacing what the client sent under that name.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.changes.push((name, Some(value)));
    }

    /// Removes `name` from the upstream request.
    pub fn remove(&mut self, name: HeaderName) {
        self.changes.push((name, None));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Applies the changes, in the order the stages made them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.changes {
            match value {
                Some(v) => {
                    headers.insert(name.clone(), v.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// What a stage may ask to see of the outcome (`RequestContext::watch`). Both have defaults
/// that do nothing, so a watcher implements only what it needs. A watcher carries what it
/// needs from the state when it is made, so it outlives a reload that swaps the state.
pub(crate) trait Watch: Send + 'static {
    /// No answer came from the upstream (connect, timeout, protocol, or a client fault such as
    /// a body too large); `status` is what the client gets instead.
    fn upstream_failed(
        self: Box<Self>,
        ctx: &RequestContext,
        err: &ForwardError,
        status: StatusCode,
    ) {
        let _ = (ctx, err, status);
    }

    /// The answer about to go to the client (after offload or pass-through). It may wrap the
    /// body (to see its end) or replace the answer (e.g. read it whole and re-seal it).
    fn response(self: Box<Self>, ctx: &RequestContext, response: Response<ProxyBody>) -> Seen {
        let _ = ctx;
        Seen::Now(response)
    }
}

/// A watcher's answer: most hand it on at once, so only those that must wait are boxed.
pub(crate) enum Seen {
    Now(Response<ProxyBody>),
    Later(BoxFuture<'static, Response<ProxyBody>>),
}

/// The request context: what the stages learn about one request, in the order they learn it.
pub(crate) struct RequestContext {
    /// The connection the request came on.
    pub conn: Arc<ConnInfo>,
    pub request_id: RequestId,
    pub started: Instant,
    pub route: Route,
    pub client_ip: IpAddr,
    /// The sanitized Host (see `Sanitized::host`).
    pub host: HeaderValue,
    /// The headers the proxy adds on the way upstream (X-Forwarded-*, X-Real-IP,
    /// X-Request-Id), from the sanitize stage.
    pub forward: ForwardHeaders,
    /// What the stages want changed in the request headers that go upstream.
    pub upstream_headers: UpstreamHeaders,
    /// Who wants to see the outcome (see [`Watch`]), in the order they asked.
    pub watchers: Vec<Box<dyn Watch>>,
    pub upstream_time: Option<Duration>,
    /// The part of `upstream_time` after the whole request had been sent: the upstream's own
    /// time, without a slow client's upload.
    pub upstream_wait: Option<Duration>,
    /// When the upstream's answer head arrived. For an answer passed through, the proxy's work
    /// after it is well under a microsecond, so this reading doubles as the request's end for
    /// the duration metric (one clock read fewer); the offload stage clears it, as its file
    /// work belongs in the duration.
    pub answered: Option<Instant>,
    /// The file an offload served.
    pub offload: Option<String>,
    /// Why the edge answered by itself, when it did.
    pub note: Option<&'static str>,
    /// The response body is already in memory to its end and small (16 KiB at most): once
    /// handed to the connection it cannot stall or fail on the upstream's side.
    pub body_in_memory: bool,
}

impl RequestContext {
    pub(crate) fn new(conn: Arc<ConnInfo>, request_id: RequestId, started: Instant) -> Self {
        RequestContext {
            client_ip: conn.peer.ip(),
            conn,
            request_id,
            started,
            route: Route::Page,
            host: HeaderValue::from_static(""),
            forward: ForwardHeaders::default(),
            upstream_headers: UpstreamHeaders::default(),
            watchers: Vec::new(),
            upstream_time: None,
            upstream_wait: None,
            answered: None,
            offload: None,
            note: None,
            body_in_memory: false,
        }
    }

    /// Asks to see the outcome of this request (see [`Watch`]).
    pub(crate) fn watch(&mut self, watcher: Box<dyn Watch>) {
        self.watchers.push(watcher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_eq!(a.as_str().len(), 32);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_a_bad_one_refused() {
        let kept = RequestId::from_client(&HeaderValue::from_static("abc-123.x"));
        assert_eq!(kept.map(|id| id.to_string()).as_deref(), Some("abc-123.x"));
        assert!(RequestId::from_client(&HeaderValue::from_static("bad id")).is_none());
        assert!(RequestId::from_client(&HeaderValue::from_static("")).is_none());
    }

    #[test]
    fn upstream_header_changes_apply_in_order() {
        let mut changes = UpstreamHeaders::default();
        assert!(changes.is_empty());
        changes.set(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        );
        changes.remove(HeaderName::from_static("x-b"));
        changes.set(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("2"),
        );
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("client"));
        h.insert("x-b", HeaderValue::from_static("client"));
        changes.apply(&mut h);
        assert_eq!(h["x-a"], "2");
        assert!(!h.contains_key("x-b"));
    }
}
