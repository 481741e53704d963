//! The request head, written as HTTP/1.1 with the forwarding headers after the request's own.

use http::header::{self, HeaderValue};
use http::{request, Method};

use crate::proxy::headers::ForwardHeaders;

/// The request head in HTTP/1.1 form. Header names are already lower case (as hyper sends them).
pub fn encode_head(
    parts: &request::Parts,
    added: Option<&ForwardHeaders>,
    authority: &HeaderValue,
) -> Vec<u8> {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut size =
        parts.method.as_str().len() + target.len() + 64 + added.map_or(0, |a| a.encoded_len());
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_host = match added {
        Some(added) => added.request_has_host(),
        None => parts.headers.contains_key(header::HOST),
    };
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        // The body is empty whatever the client's framing said.
        if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(added) = added {
        added.write_to(&mut out);
    }
    // Methods that normally carry a body say it is empty, as hyper does.
    if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
