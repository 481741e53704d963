//! Chunked decoding (RFC 9112 §7.1) over what the body has buffered.

use bytes::{Buf, Bytes};

use super::body::DirectBody;
use super::head::{Chunk, Framing};
use super::{DirectError, MAX_CHUNK_LINE, MAX_TRAILERS};

impl DirectBody {
    /// One step of chunked decoding over what is buffered: Some(frame data) when chunk data is
    /// available, None when more input is needed or a state changed (the caller loops).
    pub(super) fn step_chunked(&mut self, state: Chunk) -> Result<Option<Bytes>, DirectError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(DirectError::Framing("chunked body without a connection"));
        };
        let buf = &mut conn.buf;
        match state {
            Chunk::Size => {
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(DirectError::Framing("chunk size line too long"));
                    }
                    return Ok(None);
                };
                let size = parse_chunk_size(&buf[..line_end])?;
                buf.advance(line_end + 2);
                self.framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(None)
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(data))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(DirectError::Framing("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers(seen) => {
                // Trailer fields are not passed on (hyper's client path drops them too).
                let Some(line_end) = find_crlf(buf) else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err(DirectError::Framing("trailer section too long"));
                    }
                    return Ok(None);
                };
                if line_end > 0 && !valid_trailer_line(&buf[..line_end]) {
                    return Err(DirectError::Framing("a trailer line is not a header field"));
                }
                buf.advance(line_end + 2);
                self.framing = if line_end == 0 {
                    Framing::Done
                } else {
                    Framing::Chunked(Chunk::Trailers(seen + line_end + 2))
                };
                Ok(None)
            }
        }
    }
}

/// A control character other than HTAB (RFC 9110 §5.5: not allowed in field values).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A trailer line must be a header field (`token: value`), as hyper's parser would read it.
pub(crate) fn valid_trailer_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    http::HeaderName::from_bytes(&line[..colon]).is_ok()
        && !line[colon + 1..].iter().any(|&b| is_ctl(b))
}

pub(super) fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line: hex digits, then optional chunk extensions (ignored).
pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, DirectError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits_end..];
    if digits_end == 0 || digits_end > 15 {
        return Err(DirectError::Framing("bad chunk size"));
    }
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if !rest_ok {
        return Err(DirectError::Framing("bad chunk size"));
    }
    // Extensions are ignored, but a bare CR or LF (or another control character) in them is
    // how two readers of one stream come to disagree on where a chunk starts.
    if rest.iter().any(|&b| is_ctl(b)) {
        return Err(DirectError::Framing(
            "control character in a chunk extension",
        ));
    }
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| DirectError::Framing("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| DirectError::Framing("bad chunk size"))
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    #[test]
    fn chunk_extensions_may_not_hide_control_characters() {
        assert_eq!(parse_chunk_size(b"5").unwrap(), 5);
        assert_eq!(parse_chunk_size(b"a;name=value").unwrap(), 10);
        assert_eq!(parse_chunk_size(b"a ;\tx").unwrap(), 10);
        for bad in [&b"5;x\ry"[..], b"5;x\ny", b"5;\0", b"5;\x7f", b"5\r"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trailers_must_be_header_fields() {
        assert!(valid_trailer_line(b"X-Checksum: abc"));
        assert!(valid_trailer_line(b"x:"));
        for bad in [
            &b"no colon"[..],
            b": empty name",
            b"bad name: v",
            b"X: a\rb",
            b"X: \0",
        ] {
            assert!(!valid_trailer_line(bad), "{bad:?}");
        }
    }
}
