//! The response head: parsed by httparse, hop-by-hop headers kept out of the map, values
//! sharing the head's bytes; and the body's framing (RFC 9112 §6.3) decided from it.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::names::NameCache;
use super::{DirectError, MAX_HEADERS};

/// Parses a complete response head as the direct path does (for benches and tests): the
/// response parts, the head's length and whether the connection may be reused after the body.
/// None when `buf` holds no complete head yet.
/// `names` is the connection's name cache (a fresh one for a first response).
pub fn parse_response_head(
    buf: &Bytes,
    is_head: bool,
    names: &mut NameCache,
) -> Result<Option<(http::response::Parts, usize, bool)>, DirectError> {
    let Some((parsed, len)) = parse_head(buf, names)? else {
        return Ok(None);
    };
    let mut parts = build_parts(&parsed, &buf.slice(..len))?;
    let (_, keep_alive) = framing(&parsed, &mut parts, is_head)?;
    Ok(Some((parts, len, keep_alive)))
}

/// What `httparse` found, with header positions kept as offsets so values can share the head's
/// bytes instead of being copied. Hop-by-hop headers (and those `Connection` names) are read for
/// framing here and never enter the header map: they would only be removed again before the
/// client sees the answer.
pub(super) struct ParsedHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: Vec<(HeaderName, std::ops::Range<usize>)>,
    /// `Connection` listed `close` / `keep-alive`.
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    /// Transfer-Encoding was present; whether its codings were exactly `chunked`.
    pub(super) transfer_encoding: Option<bool>,
}

pub(super) fn parse_head(
    buf: &[u8],
    names: &mut NameCache,
) -> Result<Option<(ParsedHead, usize)>, DirectError> {
    // Left uninitialised: httparse fills only what it finds (4 KiB of empty headers would be
    // written on every response otherwise).
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(DirectError::Parse(e)),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| DirectError::Framing("bad status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (mut close, mut keep_alive) = (false, false);
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let mut named: Vec<HeaderName> = Vec::new();
    let mut codings: Option<(usize, bool)> = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(|t| t.trim_ascii()) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let (count, chunked) = codings.get_or_insert((0, false));
            for coding in h.value.split(|b| *b == b',').map(|c| c.trim_ascii()) {
                if !coding.is_empty() {
                    *count += 1;
                    *chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        }
    }
    let base = buf.as_ptr() as usize;
    let mut headers = Vec::with_capacity(response.headers.len());
    for (index, h) in response.headers.iter().enumerate() {
        let (name, hop_by_hop) = names.name(index, h.name.as_bytes())?;
        if hop_by_hop || named.contains(&name) {
            continue;
        }
        let start = h.value.as_ptr() as usize - base;
        headers.push((name, start..start + h.value.len()));
    }
    Ok(Some((
        ParsedHead {
            status,
            version,
            headers,
            close,
            keep_alive,
            transfer_encoding: codings.map(|(count, chunked)| count == 1 && chunked),
        },
        len,
    )))
}

thread_local! {
    /// Header maps of finished requests, for the next response heads read on this thread.
    /// hyper reads a connection's next request into the map of its last response, so every
    /// request's map was a response map; handed back here (cleared, allocation kept) it saves
    /// the two allocations and two frees of a new map per request.
    static SPARE_MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare maps are kept per thread.
const SPARE_MAPS_KEPT: usize = 16;

/// Hands a request's header map back for reuse once nothing reads it any more.
pub fn recycle_header_map(mut map: HeaderMap) {
    // A map too small to be worth keeping (or a huge one) is simply dropped.
    if !(16..=256).contains(&map.capacity()) {
        return;
    }
    map.clear();
    SPARE_MAPS.with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.len() < SPARE_MAPS_KEPT {
                spare.push(map);
            }
        }
    });
}

/// An empty map with room for `needed` headers and a browser's next request: a recycled one
/// when there is one.
pub(super) fn spare_header_map(needed: usize) -> HeaderMap {
    let spare = SPARE_MAPS.with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()));
    match spare {
        Some(mut map) => {
            map.reserve(needed);
            map
        }
        None => HeaderMap::with_capacity(needed.max(17)),
    }
}

pub(super) fn build_parts(
    parsed: &ParsedHead,
    head: &Bytes,
) -> Result<http::response::Parts, DirectError> {
    // Room for what the proxy adds (X-Request-Id); see `spare_header_map` for the rest.
    let mut map = spare_header_map(parsed.headers.len() + 1);
    for (name, range) in &parsed.headers {
        let value = HeaderValue::from_maybe_shared(head.slice(range.clone()))
            .map_err(|_| DirectError::Framing("bad header value"))?;
        map.append(name.clone(), value);
    }
    let mut response = Response::new(());
    *response.status_mut() = parsed.status;
    *response.version_mut() = parsed.version;
    *response.headers_mut() = map;
    Ok(response.into_parts().0)
}

/// How the body is delimited, and whether the connection may be reused afterwards. With
/// Transfer-Encoding, a Content-Length is removed from `parts` (RFC 9112 §6.3: it must not reach
/// the client beside a re-framed body).
pub(super) fn framing(
    parsed: &ParsedHead,
    parts: &mut http::response::Parts,
    is_head: bool,
) -> Result<(Framing, bool), DirectError> {
    let mut keep_alive = match parts.version {
        Version::HTTP_10 => parsed.keep_alive && !parsed.close,
        _ => !parsed.close,
    };
    let no_body = is_head
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = content_length(&parts.headers)?;
    if no_body {
        return Ok((Framing::Done, keep_alive));
    }
    if let Some(only_chunked) = parsed.transfer_encoding {
        if length.is_some() {
            keep_alive = false;
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        // Transfer-Encoding is hop-by-hop and never reaches the client, so a coding other than
        // chunked alone (gzip, or gzip under chunked) could not be undone by the client:
        // refused, as hyper's client refuses it.
        if !only_chunked {
            return Err(DirectError::Framing("a transfer coding other than chunked"));
        }
        return Ok((Framing::Chunked(Chunk::Size), keep_alive));
    }
    match length {
        Some(0) => Ok((Framing::Done, keep_alive)),
        Some(n) => Ok((Framing::Fixed(n), keep_alive)),
        None => Ok((Framing::Close, false)),
    }
}

/// The Content-Length, when present: every value (and every item of a list) must be the same
/// number, or the response cannot be framed safely (RFC 9112 §6.3 item 5).
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, DirectError> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| DirectError::Framing("bad Content-Length"))?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) || item.len() > 19 {
                return Err(DirectError::Framing("bad Content-Length"));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| DirectError::Framing("bad Content-Length"))?;
            match found {
                Some(prev) if prev != n => {
                    return Err(DirectError::Framing("conflicting Content-Length values"))
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// The body has been read to its end.
    Done,
    /// This many bytes are left.
    Fixed(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Inside the trailer section; the count is the trailer bytes seen so far.
    Trailers(usize),
}
