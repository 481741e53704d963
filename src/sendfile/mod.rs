//! The respond stage for offloaded files: when Moodle answers with `X-Accel-Redirect` or
//! `X-Sendfile`, the proxy serves the file itself, as nginx or mod_xsendfile would.
//!
//! One response walks these steps, each in its own file:
//! 1. `path`: decode and normalise the header value, map it to a root, apply the symlink policy,
//!    open the file (refusals are typed, see [`Refusal`]);
//! 2. headers: keep what Moodle decided (Content-Type, Content-Disposition, Cache-Control,
//!    Expires, Pragma, Set-Cookie, ...), replace what describes the body (length, validators);
//! 3. `conditional`: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since (RFC order);
//! 4. `range`: If-Range, then Range -> 200, 206, 206 multipart (`multipart`) or 416;
//! 5. `stream`: the body, read in chunks, optionally paced by `X-Accel-Limit-Rate`.
//!
//! Decisions:
//! - ETag: Moodle's own strong ETag is kept (it is the sha1 content hash: strong, and the same on
//!   every node and after a restore, where nginx's `"mtime-size"` changes with the file's mtime
//!   and breaks resumed downloads across a cluster). Absent or weak, the file's nginx-style
//!   `"mtime_hex-size_hex"` is used, because ranges need a strong validator.
//! - Last-Modified always comes from the file, as nginx does.
//! - Refusals: 404 when there is nothing to serve (`not_found`, `no_mapping`), 403 when a policy
//!   refused it, 500 only for a real disk fault (`io_error`); never 500 for bad input.
//! - Only an upstream 200 gets conditionals and ranges; another status is kept and the whole
//!   file sent with it (nginx keeps the upstream status too). 1xx/204/304 carry no body, so the
//!   file is not touched at all.
//! - Like nginx, any method other than HEAD is answered as a GET (nginx turns the internal
//!   redirect into a GET). Range is ignored on HEAD (RFC 9110 §14.2 defines it for GET only).
//! - Per-response controls: `X-Accel-Limit-Rate` (bytes/s, 0 = unlimited, invalid = ignored, as
//!   nginx) paces the body. `X-Accel-Buffering` only documents (we always stream).
//!   `X-Accel-Charset` and `X-Accel-Expires` are ignored. All X-Accel-* are removed.

pub(crate) mod conditional;
pub(crate) mod config;
pub(crate) mod metrics;
pub(crate) mod multipart;
pub(crate) mod path;
pub(crate) mod range;
pub(crate) mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    HeaderName, ACCEPT_RANGES, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LANGUAGE,
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE, SET_COOKIE,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::proxy::headers;
use conditional::{Precondition, Validators};
use config::{SendfileConfig, SymlinkPolicy};
use path::Opened;
use range::RangeOutcome;
use stream::{FileBody, Segment, Snapshot};

pub(crate) use metrics::SendfileMetrics;
pub(crate) use path::Refusal;

const X_ACCEL_REDIRECT: &str = "x-accel-redirect";
const X_SENDFILE: &str = "x-sendfile";
const X_ACCEL_LIMIT_RATE: &str = "x-accel-limit-rate";

/// Which header asked for the offload; the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Accel,
    Sendfile,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Accel => "accel",
            Kind::Sendfile => "sendfile",
        }
    }
}

/// A configured root with its path pre-split into segments for matching.
#[derive(Debug, Clone)]
struct Root {
    /// The URI prefix (mappings) or the root path itself (sendfile roots), as segments.
    segments: Vec<Vec<u8>>,
    root: PathBuf,
}

/// The offload stage for one config generation. Cheap to build; a reload builds a new one and
/// hands it the same metrics.
pub struct Offloader {
    /// X-Accel-Redirect: URI prefix -> directory.
    mappings: Vec<Root>,
    /// The mapping prefixes alone, for `is_internal_path` on every request.
    internal_prefixes: Vec<Vec<Vec<u8>>>,
    /// X-Sendfile: the directories a path must lie under.
    sendfile_roots: Vec<Root>,
    symlinks: SymlinkPolicy,
    /// Process-wide, shared across reloads.
    metrics: Arc<SendfileMetrics>,
}

/// The stage's answer.
pub struct Offload {
    pub response: Response<ProxyBody>,
    /// The file served, for the access log (None when refused).
    pub file: Option<PathBuf>,
    /// Why it was refused, as the metric label (None when served).
    pub refusal: Option<&'static str>,
}

impl Offloader {
    pub fn new(cfg: &SendfileConfig, metrics: Arc<SendfileMetrics>) -> Self {
        let mappings: Vec<Root> = cfg
            .mappings
            .iter()
            .filter_map(|m| {
                let segments = path::config_segments(m.prefix.as_bytes());
                // A prefix of `/` would make every request path "internal" and every URI a
                // file under the root: refuse it here rather than 404 the whole site.
                if segments.is_empty() {
                    tracing::warn!(prefix = %m.prefix, "sendfile mapping with an empty prefix ignored");
                    return None;
                }
                Some(Root {
                    segments,
                    root: m.root.clone(),
                })
            })
            .collect();
        let sendfile_roots = cfg
            .sendfile_roots
            .iter()
            .filter_map(|root| match path::root_segments(root) {
                Some(segments) => Some(Root {
                    segments,
                    root: root.clone(),
                }),
                None => {
                    tracing::warn!(root = %root.display(), "relative sendfile root ignored");
                    None
                }
            })
            .collect();
        let internal_prefixes = mappings.iter().map(|m| m.segments.clone()).collect();
        Offloader {
            mappings,
            internal_prefixes,
            sendfile_roots,
            symlinks: cfg.symlinks,
            metrics,
        }
    }

    /// True when the upstream response asks for an offload (either header present).
    pub fn wants_offload(upstream_headers: &HeaderMap) -> bool {
        // A scan of the few response names: a lookup by a `&str` name parses and hashes the
        // name on every call, and this runs for every response.
        upstream_headers
            .keys()
            .any(|n| matches!(n.as_str(), X_ACCEL_REDIRECT | X_SENDFILE))
    }

    /// Whether a client's request path reaches an internal mapping prefix (after decoding and
    /// normalisation); the proxy answers those with 404 so the files are only reachable
    /// through Moodle's access checks.
    pub fn is_internal_path(&self, path: &str) -> bool {
        path::path_reaches_prefix(path, &self.internal_prefixes)
    }

    /// Builds the client response for an offload answer. `request_method`/`request_headers` are
    /// the client's (Range, If-*), `upstream` are the upstream response parts (status, headers).
    /// Never panics, never returns 500 for bad input.
    pub async fn respond(
        &self,
        request_method: &Method,
        request_headers: &HeaderMap,
        upstream: http::response::Parts,
    ) -> Offload {
        let (kind, value) = match offload_value(&upstream.headers) {
            Ok(found) => found,
            Err((kind, refusal)) => return self.refuse(kind, refusal, &upstream.headers, b""),
        };

        // A bodyless status (Moodle's own 304, say) is passed on without touching the disk.
        let status = upstream.status;
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            let headers = end_to_end_headers(&upstream.headers);
            self.count(kind, status);
            return Offload {
                response: build(status, headers, body::empty()),
                file: None,
                refusal: None,
            };
        }

        let opened = match self.locate(kind, &value) {
            Ok((root, relative)) => {
                let policy = self.symlinks;
                // Path resolution is a handful of blocking syscalls: keep them off the reactor.
                tokio::task::spawn_blocking(move || path::open_under(&root, &relative, policy))
                    .await
                    .unwrap_or_else(|join| Err(Refusal::Io(std::io::Error::other(join))))
            }
            Err(refusal) => Err(refusal),
        };
        match opened {
            Ok(opened) => self.serve(kind, request_method, request_headers, upstream, opened),
            Err(refusal) => self.refuse(kind, refusal, &upstream.headers, &value),
        }
    }

    /// Maps the header value to (root directory, path segments under it).
    fn locate(&self, kind: Kind, value: &[u8]) -> Result<(PathBuf, Vec<Vec<u8>>), Refusal> {
        let (segments, roots, missing) = match kind {
            Kind::Accel => (
                path::accel_uri_segments(value)?,
                &self.mappings,
                Refusal::NoMapping,
            ),
            Kind::Sendfile => (
                path::sendfile_path_segments(value)?,
                &self.sendfile_roots,
                Refusal::OutsideRoot,
            ),
        };
        let candidates = roots
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.segments.as_slice()));
        let (index, depth) = path::longest_match(candidates, &segments).ok_or(missing)?;
        let root = roots
            .get(index)
            .map(|r| r.root.clone())
            .ok_or(Refusal::NoMapping)?;
        Ok((root, segments[depth..].to_vec()))
    }

    fn serve(
        &self,
        kind: Kind,
        method: &Method,
        request_headers: &HeaderMap,
        upstream: http::response::Parts,
        opened: Opened,
    ) -> Offload {
        let Opened { file, path, meta } = opened;
        let len = meta.len();
        let snapshot = Snapshot {
            len,
            mtime: meta.modified().ok(),
        };
        let last_modified = snapshot.mtime.map(conditional::whole_seconds);
        let etag = choose_etag(&upstream.headers, last_modified, len);
        let limit_rate = limit_rate(&upstream.headers);
        let is_head = method == Method::HEAD;

        let mut headers = end_to_end_headers(&upstream.headers);
        insert_str(&mut headers, ETAG, &etag);
        if let Some(modified) = last_modified {
            insert_str(
                &mut headers,
                LAST_MODIFIED,
                &httpdate::fmt_http_date(modified),
            );
        }

        let mut status = upstream.status;
        let mut segments = vec![Segment::File { offset: 0, len }];
        let mut body_len = len;

        if status == StatusCode::OK {
            headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let validators = Validators {
                etag: &etag,
                last_modified,
            };
            // nginx serves the internal redirect as a GET whatever the client's method was.
            let effective = if is_head { Method::HEAD } else { Method::GET };
            match conditional::evaluate(&effective, request_headers, validators) {
                Precondition::Proceed => {}
                Precondition::NotModified => {
                    strip_representation_headers(&mut headers);
                    return self.finish(
                        kind,
                        StatusCode::NOT_MODIFIED,
                        headers,
                        body::empty(),
                        path,
                    );
                }
                Precondition::Failed => {
                    let headers = error_headers(&upstream.headers);
                    return self.finish(
                        kind,
                        StatusCode::PRECONDITION_FAILED,
                        headers,
                        body::empty(),
                        path,
                    );
                }
            }
            match range_outcome(is_head, request_headers, validators, len) {
                RangeOutcome::Full => {}
                RangeOutcome::Single(range) => {
                    status = StatusCode::PARTIAL_CONTENT;
                    insert_str(&mut headers, CONTENT_RANGE, &range.content_range(len));
                    segments = vec![Segment::File {
                        offset: range.start,
                        len: range.len(),
                    }];
                    body_len = range.len();
                }
                RangeOutcome::Multi(ranges) => {
                    status = StatusCode::PARTIAL_CONTENT;
                    let boundary = multipart::boundary();
                    let (parts, total) = multipart::plan(
                        &ranges,
                        len,
                        upstream.headers.get(CONTENT_TYPE),
                        &boundary,
                    );
                    insert_str(
                        &mut headers,
                        CONTENT_TYPE,
                        &multipart::content_type(&boundary),
                    );
                    segments = parts;
                    body_len = total;
                }
                RangeOutcome::Unsatisfiable => {
                    let mut headers = error_headers(&upstream.headers);
                    insert_str(&mut headers, CONTENT_RANGE, &format!("bytes */{len}"));
                    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                    return self.finish(
                        kind,
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        headers,
                        body::empty(),
                        path,
                    );
                }
            }
        }

        headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        // HEAD keeps the Content-Length of the GET but sends nothing (hyper accepts an empty
        // body with an explicit length for HEAD).
        let body = if is_head || body_len == 0 {
            body::empty()
        } else {
            FileBody::new(
                Arc::new(file),
                path.clone(),
                snapshot,
                segments,
                limit_rate,
                self.metrics.clone(),
            )
            .into_proxy_body()
        };
        self.finish(kind, status, headers, body, path)
    }

    fn finish(
        &self,
        kind: Kind,
        status: StatusCode,
        mut headers: HeaderMap,
        body: ProxyBody,
        path: PathBuf,
    ) -> Offload {
        if !headers.contains_key(CONTENT_LENGTH) && status != StatusCode::NOT_MODIFIED {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
        }
        self.count(kind, status);
        tracing::debug!(kind = kind.label(), status = status.as_u16(), path = %path.display(), "offload served");
        Offload {
            response: build(status, headers, body),
            file: Some(path),
            refusal: None,
        }
    }

    fn refuse(&self, kind: Kind, refusal: Refusal, upstream: &HeaderMap, value: &[u8]) -> Offload {
        let status = refusal.status();
        let label = refusal.label();
        // The value comes from the upstream; cap and escape it before it reaches the log.
        let shown: String = value
            .iter()
            .take(256)
            .copied()
            .map(char::from)
            .flat_map(char::escape_default)
            .collect();
        tracing::warn!(kind = kind.label(), reason = label, error = %refusal, value = %shown, "offload refused");
        self.metrics.refusals.with_label_values(&[label]).inc();
        self.count(kind, status);
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut headers = error_headers(upstream);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len() as u64));
        Offload {
            response: build(status, headers, body::full(text)),
            file: None,
            refusal: Some(label),
        }
    }

    fn count(&self, kind: Kind, status: StatusCode) {
        self.metrics
            .responses
            .with_label_values(&[kind.label(), status.as_str()])
            .inc();
    }
}

/// The offload header and its value: X-Accel-Redirect wins when both are present (it is the one
/// nginx knows). A repeated header is ambiguous and refused.
fn offload_value(headers: &HeaderMap) -> Result<(Kind, Vec<u8>), (Kind, Refusal)> {
    let (kind, name) = if headers.contains_key(X_ACCEL_REDIRECT) {
        (Kind::Accel, X_ACCEL_REDIRECT)
    } else if headers.contains_key(X_SENDFILE) {
        (Kind::Sendfile, X_SENDFILE)
    } else {
        return Err((Kind::Accel, Refusal::NoMapping));
    };
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok((kind, value.as_bytes().trim_ascii().to_vec())),
        _ => Err((kind, Refusal::BadEncoding)),
    }
}

/// Moodle's ETag when it is one strong tag, else the file's `"mtime_hex-size_hex"`.
fn choose_etag(upstream: &HeaderMap, last_modified: Option<SystemTime>, len: u64) -> String {
    let mut values = upstream.get_all(ETAG).iter();
    if let (Some(value), None) = (values.next(), values.next()) {
        if let Ok(text) = value.to_str() {
            if conditional::is_strong_etag(text.trim()) {
                return text.trim().to_string();
            }
        }
    }
    let secs = last_modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{len:x}\"")
}

/// `X-Accel-Limit-Rate`: bytes per second; 0 or anything unparsable means no limit.
fn limit_rate(upstream: &HeaderMap) -> Option<u64> {
    upstream
        .get(X_ACCEL_LIMIT_RATE)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|rate| *rate > 0)
}

/// Whether to serve a range: GET only, a single Range line, and If-Range (when present) must
/// match, or the client gets the whole file.
fn range_outcome(
    is_head: bool,
    request: &HeaderMap,
    validators: Validators<'_>,
    len: u64,
) -> RangeOutcome {
    if is_head {
        return RangeOutcome::Full;
    }
    let mut lines = request.get_all(RANGE).iter();
    let header = match (lines.next(), lines.next()) {
        (Some(line), None) => match line.to_str() {
            Ok(text) => text,
            Err(_) => return RangeOutcome::Full,
        },
        _ => return RangeOutcome::Full,
    };
    if let Some(if_range) = request.get(IF_RANGE) {
        let allowed = if_range
            .to_str()
            .is_ok_and(|value| conditional::if_range_allows(value, validators));
        if !allowed {
            return RangeOutcome::Full;
        }
    }
    range::evaluate(header, len)
}

/// The upstream headers minus hop-by-hop ones, the offload controls, and everything that
/// describes the upstream's (empty) body rather than the file.
fn end_to_end_headers(upstream: &HeaderMap) -> HeaderMap {
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let connection_named: Vec<HeaderName> = upstream
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let drop = headers::is_hop_by_hop(name)
            || headers::is_offload_control(name)
            || connection_named.contains(name)
            || matches!(
                name,
                &CONTENT_LENGTH | &CONTENT_RANGE | &ACCEPT_RANGES | &ETAG | &LAST_MODIFIED
            );
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A 304 carries the validators and caching headers but nothing describing a body (RFC 9110
/// §15.4.5).
fn strip_representation_headers(headers: &mut HeaderMap) {
    for name in [
        CONTENT_TYPE,
        CONTENT_LENGTH,
        CONTENT_ENCODING,
        CONTENT_LANGUAGE,
        CONTENT_RANGE,
        ACCEPT_RANGES,
    ] {
        headers.remove(name);
    }
}

/// Headers for a 403/404/412/416/500 of our own: Moodle's cookies survive (a session rotation
/// must not be lost), its caching headers do not (a shared cache must never keep an error meant
/// for one request).
fn error_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in upstream.get_all(SET_COOKIE) {
        headers.append(SET_COOKIE, value.clone());
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
}

/// Inserts a header built from text we produced; such text is always a valid value, and if it
/// ever were not, dropping the header beats failing the response.
fn insert_str(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn build(status: StatusCode, headers: HeaderMap, body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests;
