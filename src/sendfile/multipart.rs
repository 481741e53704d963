//! `multipart/byteranges` (RFC 9110 §14.6) as a list of body segments, laid out like nginx's:
//!
//! ```text
//! \r\n--BOUNDARY\r\nContent-Type: T\r\nContent-Range: bytes a-b/LEN\r\n\r\n<data>
//! ... one per range ...
//! \r\n--BOUNDARY--\r\n
//! ```
//!
//! The whole length is known up front, so the response keeps an exact Content-Length.

use bytes::Bytes;
use http::HeaderValue;

use super::range::ByteRange;
use super::stream::Segment;

/// A fresh boundary per response: 128 random bits, so it cannot occur in the file by chance or
/// be predicted by whoever uploaded the file.
pub(crate) fn boundary() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The response's Content-Type for `boundary`.
pub(crate) fn content_type(boundary: &str) -> String {
    format!("multipart/byteranges; boundary={boundary}")
}

/// The body segments and their total length. `content_type` is the file's own (Moodle's), and
/// is left out of each part when the upstream sent none.
pub(crate) fn plan(
    ranges: &[ByteRange],
    total_len: u64,
    content_type: Option<&HeaderValue>,
    boundary: &str,
) -> (Vec<Segment>, u64) {
    let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
    for range in ranges {
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(b"\r\n--");
        head.extend_from_slice(boundary.as_bytes());
        head.extend_from_slice(b"\r\n");
        if let Some(content_type) = content_type {
            head.extend_from_slice(b"Content-Type: ");
            head.extend_from_slice(content_type.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Range: ");
        head.extend_from_slice(range.content_range(total_len).as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        segments.push(Segment::Bytes(Bytes::from(head)));
        segments.push(Segment::File {
            offset: range.start,
            len: range.len(),
        });
    }
    segments.push(Segment::Bytes(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    let len = segments.iter().map(Segment::len).sum();
    (segments, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders the plan against in-memory file bytes.
    fn render(segments: &[Segment], file: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for segment in segments {
            match segment {
                Segment::Bytes(bytes) => out.extend_from_slice(bytes),
                Segment::File { offset, len } => {
                    out.extend_from_slice(&file[*offset as usize..(*offset + *len) as usize])
                }
            }
        }
        out
    }

    #[test]
    fn layout_matches_nginx() {
        let file = b"0123456789";
        let ranges = [
            ByteRange { start: 0, end: 2 },
            ByteRange { start: 5, end: 7 },
        ];
        let ct = HeaderValue::from_static("application/pdf");
        let (segments, len) = plan(&ranges, 10, Some(&ct), "B");
        let body = render(&segments, file);
        let want = "\r\n--B\r\nContent-Type: application/pdf\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                    \r\n--B\r\nContent-Type: application/pdf\r\nContent-Range: bytes 5-6/10\r\n\r\n56\
                    \r\n--B--\r\n";
        assert_eq!(String::from_utf8(body.clone()).unwrap(), want);
        assert_eq!(len, body.len() as u64);
    }

    #[test]
    fn no_content_type_line_without_one() {
        let (segments, _) = plan(&[ByteRange { start: 1, end: 2 }], 3, None, "B");
        let body = String::from_utf8(render(&segments, b"abc")).unwrap();
        assert_eq!(
            body,
            "\r\n--B\r\nContent-Range: bytes 1-1/3\r\n\r\nb\r\n--B--\r\n"
        );
    }

    #[test]
    fn boundaries_differ() {
        let (a, b) = (boundary(), boundary());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(content_type("x"), "multipart/byteranges; boundary=x");
    }
}
