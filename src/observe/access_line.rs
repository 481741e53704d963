//! One access-log line, written straight into the sink's batch buffer: the record, the
//! adapters both formats share, and nginx's combined format (here); the JSON line (the
//! default) is `json_line.rs`, and `access_log` writes the configured one. Nothing is copied
//! or allocated per line:
//! header values, the target and the time are written through adapters that redact, cap and
//! escape as they go.
//!
//! Hostile bytes stay inside their field: in JSON every string is escaped as serde_json
//! escapes (quotes, backslashes, control characters) after invalid UTF-8 became U+FFFD; in the
//! combined format `"`, `\`, control and non-ASCII bytes become `\xHH`, as nginx writes them.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::net::IpAddr;
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};

use crate::observe::redact::{RedactedTarget, RedactedUrl};

/// User-Agent and Referer are cut to this many characters (a line stays a line).
pub(super) const HEADER_CHARS: usize = 512;

/// What the access log says about one request; filled in by the stages as they run. The
/// time is not here: it is read when the line is written.
pub(crate) struct AccessRecord {
    /// Ties the line to the answer's X-Request-Id and Moodle's own log.
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The Host the request named (empty when it had none).
    pub host: HeaderValue,
    /// Path and query as received; secrets are redacted when the line is written.
    pub uri: Uri,
    pub protocol: &'static str,
    pub tls: bool,
    pub route: &'static str,
    pub status: u16,
    pub bytes_sent: u64,
    /// Whole microseconds (nginx's `$request_time` has milliseconds): an integer formats
    /// without a float formatter and still reads as serde_json's number (`json_line.rs`).
    pub duration_us: u64,
    pub upstream_us: Option<u64>,
    /// The file served, when the answer was offloaded.
    pub offload: Option<String>,
    /// Why the edge answered itself (rate_limited, body_too_large, ...) when it did.
    pub note: Option<&'static str>,
    /// False when the response body ended early: client gone, upstream cut, file changed.
    pub complete: bool,
    pub user_agent: Option<HeaderValue>,
    /// Redacted when written: Moodle's page URLs carry sesskey.
    pub referer: Option<HeaderValue>,
}

impl AccessRecord {
    /// Appends the combined-format line (without its newline) to `out`.
    pub(crate) fn write_combined(&self, time: SystemTime, out: &mut Vec<u8>) -> io::Result<()> {
        write!(
            out,
            "{ip} - - [{time}] \"{method} {target} {proto}\" {status} {bytes} \"{referer}\" \"{ua}\" rt={rt:.3} urt=",
            ip = self.client_ip,
            time = ClfTime(time),
            method = Escaped(self.method.as_str()),
            target = Escaped(Target(&self.uri)),
            proto = self.protocol,
            status = self.status,
            bytes = self.bytes_sent,
            referer = Escaped(OrDash(present(&self.referer).map(Referer))),
            ua = Escaped(OrDash(present(&self.user_agent).map(Text::capped))),
            rt = self.duration_us as f64 / 1e6,
        )?;
        match self.upstream_us {
            Some(us) => write!(out, "{:.3}", us as f64 / 1e6)?,
            None => out.push(b'-'),
        }
        write!(
            out,
            " rid={} route={}",
            Escaped(Text::of(&self.request_id)),
            self.route
        )?;
        if let Some(file) = &self.offload {
            write!(out, " offload={}", Escaped(file))?;
        }
        if let Some(note) = self.note {
            write!(out, " note={note}")?;
        }
        Ok(())
    }
}

/// A header that is there and not empty.
pub(super) fn present(v: &Option<HeaderValue>) -> Option<&HeaderValue> {
    v.as_ref().filter(|v| !v.is_empty())
}

/// A header value's bytes as text: invalid UTF-8 becomes U+FFFD, at most `max` characters.
#[derive(Clone, Copy)]
pub(super) struct Text<'a> {
    bytes: &'a [u8],
    max: usize,
}

impl<'a> Text<'a> {
    pub(super) fn of(v: &'a HeaderValue) -> Self {
        Text {
            bytes: v.as_bytes(),
            max: usize::MAX,
        }
    }

    pub(super) fn capped(v: &'a HeaderValue) -> Self {
        Text {
            bytes: v.as_bytes(),
            max: HEADER_CHARS,
        }
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole runs of valid text at once: the JSON escaper's cost is per call, not per byte.
        let mut out = Cap { f, left: self.max };
        for chunk in self.bytes.utf8_chunks() {
            out.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                out.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

/// Writes through to a formatter until `left` characters have been written, then drops the
/// rest (whole runs at once while they fit).
struct Cap<'f, 'g> {
    f: &'f mut fmt::Formatter<'g>,
    left: usize,
}

impl fmt::Write for Cap<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.left == usize::MAX {
            return self.f.write_str(s);
        }
        // A str has at least as many bytes as characters: a short one fits whole.
        if s.len() <= self.left {
            self.left -= s.chars().count();
            return self.f.write_str(s);
        }
        match s.char_indices().nth(self.left) {
            Some((cut, _)) => {
                self.left = 0;
                self.f.write_str(&s[..cut])
            }
            None => {
                self.left -= s.chars().count();
                self.f.write_str(s)
            }
        }
    }
}

/// The request's path and query, secrets redacted.
pub(super) struct Target<'a>(pub(super) &'a Uri);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RedactedTarget {
            path: self.0.path(),
            query: self.0.query(),
        }
        .fmt(f)
    }
}

/// The Referer, capped, secrets redacted.
pub(super) struct Referer<'a>(pub(super) &'a HeaderValue);

impl fmt::Display for Referer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_str() {
            Ok(text) => Capped(RedactedUrl(text), HEADER_CHARS).fmt(f),
            // Not ASCII: hostile or broken, and rare; lossy first, then redacted.
            Err(_) => {
                let text = String::from_utf8_lossy(self.0.as_bytes());
                Capped(RedactedUrl(&text), HEADER_CHARS).fmt(f)
            }
        }
    }
}

/// At most `.1` characters of a `Display`.
struct Capped<D>(D, usize);

impl<D: fmt::Display> fmt::Display for Capped<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Cap { f, left: self.1 }, "{}", self.0)
    }
}

/// `-` for a missing field, as the combined format writes it.
struct OrDash<D>(Option<D>);

impl<D: fmt::Display> fmt::Display for OrDash<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(d) => d.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// nginx's escaping for the combined format: `"`, `\`, control and non-ASCII bytes as `\xHH`,
/// so a field can neither end its quotes early nor start a line.
struct Escaped<D>(D);

impl<D: fmt::Display> fmt::Display for Escaped<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Esc<'f, 'g>(&'f mut fmt::Formatter<'g>);
        impl fmt::Write for Esc<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let mut plain = 0;
                for (i, b) in s.bytes().enumerate() {
                    if matches!(b, b'"' | b'\\' | 0..=0x1f | 0x7f..) {
                        // Inside a multi-byte character `plain == i`: nothing to slice.
                        if plain < i {
                            self.0.write_str(&s[plain..i])?;
                        }
                        write!(self.0, "\\x{b:02X}")?;
                        plain = i + 1;
                    }
                }
                // Escaped bytes are ASCII or whole UTF-8 sequences, so `plain` is a boundary.
                self.0.write_str(&s[plain..])
            }
        }
        write!(Esc(f), "{}", self.0)
    }
}

/// A time as the combined format writes it (`01/Dec/2026:21:40:53 +0000`, always UTC), so
/// the tools that read nginx's and Apache's logs read ours.
pub(crate) struct ClfTime(pub SystemTime);

impl fmt::Display for ClfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(
            f,
            "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn record() -> AccessRecord {
        AccessRecord {
            request_id: HeaderValue::from_static("r1"),
            client_ip: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            host: HeaderValue::from_static("lms"),
            uri: "/x?wstoken=abc".parse().unwrap(),
            protocol: "HTTP/1.1",
            tls: false,
            route: "page",
            status: 200,
            bytes_sent: 0,
            duration_us: 0,
            upstream_us: None,
            offload: None,
            note: None,
            complete: false,
            user_agent: None,
            referer: None,
        }
    }

    fn line(r: &AccessRecord) -> String {
        let mut out = Vec::new();
        r.write_combined(SystemTime::UNIX_EPOCH, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Every byte a header value may hold (hyper takes obs-text and tabs; quotes and
    /// backslashes are ordinary), plus invalid UTF-8.
    pub(crate) fn hostile() -> HeaderValue {
        HeaderValue::from_bytes(b"a\"b\\c\td\xff\xfe\x80e\"}\\\",\"x\":\"").unwrap()
    }

    #[test]
    fn combined_format_has_the_usual_fields() {
        let line = line(&record());
        assert_eq!(
            line,
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /x?wstoken=[redacted] HTTP/1.1\" 200 0 \"-\" \"-\" rt=0.000 urt=- rid=r1 route=page"
        );
    }

    #[test]
    fn combined_format_escapes_as_nginx() {
        let mut r = record();
        r.user_agent = Some(hostile());
        r.uri = "/a\"b".parse().unwrap();
        let line = line(&r);
        assert!(line.contains("\"GET /a\\x22b HTTP/1.1\""), "{line}");
        assert!(
            line.contains("\"a\\x22b\\x5Cc\\x09d\\xEF\\xBF\\xBD"),
            "{line}"
        );
        // Exactly the six quotes of the format itself.
        assert_eq!(line.matches('"').count(), 6, "{line}");
    }

    #[test]
    fn combined_time_is_the_common_log_format() {
        let at =
            |secs: u64| ClfTime(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(1_709_210_096), "29/Feb/2024:12:34:56 +0000");
        assert_eq!(at(951_825_600), "29/Feb/2000:12:00:00 +0000");
        assert_eq!(at(4_102_444_799), "31/Dec/2099:23:59:59 +0000");
    }
}
