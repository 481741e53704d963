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

pub(super) fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line: hex digits, then optional chunk extensions (ignored).
pub(super) fn parse_chunk_size(line: &[u8]) -> Result<u64, DirectError> {
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
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| DirectError::Framing("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| DirectError::Framing("bad chunk size"))
}
