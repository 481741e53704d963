//! `Range: bytes=...` against a known length (RFC 9110 §14), with nginx's limits.
//!
//! Policy, and why:
//! - A header that is not `bytes=` or does not parse is ignored (200 with the whole file). RFC 9110
//!   lets a server ignore Range; nginx answers 416 to a malformed `bytes=` list, but ignoring is
//!   the safer answer for a client that sent something we do not understand.
//! - Ranges that start beyond the end are dropped; if none is left, 416.
//! - Like nginx's range filter: ranges are served in the order asked, not merged; if their total
//!   size exceeds the file (overlap games, RFC 9110 §17.15) the whole file is sent as a 200
//!   instead. More than [`MAX_RANGES`] ranges also gets the whole file (nginx's `max_ranges`).
//! - A range that starts at 0 but is empty (any range of an empty file) declines to a 200, as
//!   nginx does.

/// More ranges than this and the client gets the whole file. nginx has no default cap; Apache
/// uses 200. 64 is far more than any downloader or PDF viewer sends.
pub(crate) const MAX_RANGES: usize = 64;

/// One satisfiable range, `start..end` (end exclusive, so `len = end - start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    /// `bytes a-b/total` for Content-Range (the header shows the last byte, inclusive).
    pub(crate) fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, total)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// Send the whole file with 200.
    Full,
    /// One range: 206 with Content-Range.
    Single(ByteRange),
    /// Several ranges: 206 multipart/byteranges.
    Multi(Vec<ByteRange>),
    /// Nothing satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates a Range header value against a representation of `len` bytes.
pub(crate) fn evaluate(header: &str, len: u64) -> RangeOutcome {
    let Some(specs) = parse(header) else {
        return RangeOutcome::Full;
    };
    if specs.len() > MAX_RANGES {
        return RangeOutcome::Full;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    let mut total: u64 = 0;
    for spec in specs {
        let range = match spec {
            Spec::From { first, last } => {
                // An open end or one past EOF is clamped to the last byte.
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                ByteRange { start: first, end }
            }
            Spec::Suffix(n) => ByteRange {
                start: len.saturating_sub(n),
                end: len,
            },
        };
        if range.start < range.end {
            total = total.saturating_add(range.len());
            ranges.push(range);
        } else if range.start == 0 {
            // Empty file (or `bytes=-0` of one): nginx declines and sends the whole thing.
            return RangeOutcome::Full;
        }
    }
    if ranges.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    if total > len {
        return RangeOutcome::Full;
    }
    if ranges.len() == 1 {
        return RangeOutcome::Single(ranges[0]);
    }
    RangeOutcome::Multi(ranges)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Parses `bytes=spec, spec, ...`; `None` for anything malformed (including `last < first`,
/// which RFC 9110 §14.1.1 calls invalid).
fn parse(header: &str) -> Option<Vec<Spec>> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for item in set.split(',') {
        let item = item.trim_matches([' ', '\t']);
        // The list syntax allows empty elements (`a, , b`).
        if item.is_empty() {
            continue;
        }
        let (first, last) = item.split_once('-')?;
        let (first, last) = (
            first.trim_matches([' ', '\t']),
            last.trim_matches([' ', '\t']),
        );
        let spec = if first.is_empty() {
            Spec::Suffix(digits(last)?)
        } else {
            let first = digits(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(digits(last)?)
            };
            if last.is_some_and(|last| last < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
        // Stop parsing a hostile header early; `evaluate` turns this into a 200.
        if specs.len() > MAX_RANGES {
            break;
        }
    }
    if specs.is_empty() {
        return None;
    }
    Some(specs)
}

/// Plain ASCII digits only (`u64::from_str` would accept a leading `+`); overflow is invalid.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeOutcome::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn single_ranges() {
        assert_eq!(evaluate("bytes=0-0", 1000), Single(r(0, 1)));
        assert_eq!(evaluate("bytes=-500", 1000), Single(r(500, 1000)));
        assert_eq!(evaluate("bytes=500-", 1000), Single(r(500, 1000)));
        assert_eq!(evaluate("bytes=0-999", 1000), Single(r(0, 1000)));
        assert_eq!(evaluate("Bytes = 10 - 19", 1000), Single(r(10, 20)));
        // A suffix longer than the file is the whole file, as a 206.
        assert_eq!(evaluate("bytes=-5000", 1000), Single(r(0, 1000)));
        // An end past EOF is clamped.
        assert_eq!(evaluate("bytes=900-5000", 1000), Single(r(900, 1000)));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(evaluate("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(evaluate("bytes=2000-3000", 1000), Unsatisfiable);
        assert_eq!(evaluate("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(evaluate("bytes=1000-,2000-", 1000), Unsatisfiable);
    }

    #[test]
    fn multiple_ranges() {
        assert_eq!(
            evaluate("bytes=0-1,5-6", 1000),
            Multi(vec![r(0, 2), r(5, 7)])
        );
        // Unsatisfiable members are dropped; one left means a plain 206.
        assert_eq!(evaluate("bytes=0-1,5000-6000", 1000), Single(r(0, 2)));
        // Served in the order asked.
        assert_eq!(
            evaluate("bytes=5-6, 0-1", 1000),
            Multi(vec![r(5, 7), r(0, 2)])
        );
        assert_eq!(
            evaluate("bytes=0-1,,5-6", 1000),
            Multi(vec![r(0, 2), r(5, 7)])
        );
    }

    #[test]
    fn excessive_ranges_get_the_whole_file() {
        // Overlaps adding up to more than the file.
        assert_eq!(evaluate("bytes=0-799,200-999", 1000), Full);
        let many: Vec<String> = (0..=MAX_RANGES).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(evaluate(&format!("bytes={}", many.join(",")), 1000), Full);
        let ok: Vec<String> = (0..MAX_RANGES).map(|i| format!("{i}-{i}")).collect();
        assert!(
            matches!(evaluate(&format!("bytes={}", ok.join(",")), 1000), Multi(v) if v.len() == MAX_RANGES)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for header in [
            "",
            "bytes=",
            "bytes",
            "items=0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=0-1,5-1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=1",
            "bytes=99999999999999999999999-",
            "bytes=0-1;x",
        ] {
            assert_eq!(evaluate(header, 1000), Full, "{header:?}");
        }
    }

    #[test]
    fn empty_file_declines() {
        assert_eq!(evaluate("bytes=0-", 0), Full);
        assert_eq!(evaluate("bytes=-5", 0), Full);
        assert_eq!(evaluate("bytes=5-", 0), Unsatisfiable);
    }

    #[test]
    fn content_range_header() {
        assert_eq!(r(0, 1).content_range(1000), "bytes 0-0/1000");
        assert_eq!(r(500, 1000).content_range(1000), "bytes 500-999/1000");
    }
}
