//! The access log's JSON line, written by hand straight into the sink's batch buffer.
//!
//! Why not `serde_json::to_writer`: it escapes each `Display` piece of a field through `fmt`
//! (`collect_str`), which made the line cost several thousand instructions per request
//! (docs/performance.md). Here plain runs are copied whole and only `"`, `\` and control
//! characters are escaped, exactly as serde_json escapes them; the unit tests hold the output
//! byte for byte to serde_json's, hostile and random header bytes included.
//!
//! Field order (docs/logs.md): time, request_id, client_ip, method, host, target, protocol,
//! tls, route, status, bytes_sent, duration_ms, upstream_ms?, offload?, note?, complete,
//! user_agent?, referer? (`?`: left out when there is nothing to say).

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::SystemTime;

use http::Uri;

use crate::observe::access_line::{
    civil_from_days, present, AccessRecord, Referer, Target, HEADER_CHARS,
};
use crate::observe::redact;

/// Appends the record's line (without its newline) to `out`.
pub(crate) fn write(r: &AccessRecord, time: SystemTime, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_millis(time, out);
    out.extend_from_slice(b"\",\"request_id\":\"");
    text(out, r.request_id.as_bytes(), usize::MAX);
    out.extend_from_slice(b"\",\"client_ip\":\"");
    address(out, r.client_ip);
    out.extend_from_slice(b"\",\"method\":\"");
    escape(out, r.method.as_str());
    out.extend_from_slice(b"\",\"host\":\"");
    text(out, r.host.as_bytes(), usize::MAX);
    out.extend_from_slice(b"\",\"target\":\"");
    target(out, &r.uri);
    out.extend_from_slice(b"\",\"protocol\":\"");
    out.extend_from_slice(r.protocol.as_bytes());
    out.extend_from_slice(b"\",\"tls\":");
    out.extend_from_slice(if r.tls { b"true" } else { b"false" });
    out.extend_from_slice(b",\"route\":\"");
    out.extend_from_slice(r.route.as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b",\"bytes_sent\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.bytes_sent).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, r.duration_us);
    if let Some(us) = r.upstream_us {
        out.extend_from_slice(b",\"upstream_ms\":");
        millis(out, us);
    }
    if let Some(file) = &r.offload {
        out.extend_from_slice(b",\"offload\":\"");
        escape(out, file);
        out.push(b'"');
    }
    if let Some(note) = r.note {
        out.extend_from_slice(b",\"note\":\"");
        escape(out, note);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"complete\":");
    out.extend_from_slice(if r.complete { b"true" } else { b"false" });
    if let Some(ua) = present(&r.user_agent) {
        out.extend_from_slice(b",\"user_agent\":\"");
        text(out, ua.as_bytes(), HEADER_CHARS);
        out.push(b'"');
    }
    if let Some(referer) = present(&r.referer) {
        out.extend_from_slice(b",\"referer\":\"");
        let _ = write!(Escaping(out), "{}", Referer(referer));
        out.push(b'"');
    }
    out.push(b'}');
}

/// An address as its `Display` writes it; IPv4 (nearly every line) digit by digit, since
/// `fmt` pads and formats each octet on its own. An address never needs escaping.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(_) => {
            let _ = write!(Raw(out), "{ip}");
        }
    }
}

/// The target, secrets redacted: copied as it is when nothing in it is secret (the usual
/// case), else written by the redacting `Display`.
fn target(out: &mut Vec<u8>, uri: &Uri) {
    let (path, query) = (uri.path(), uri.query());
    if redact::needs_redaction(path, query) {
        // Writing into a Vec cannot fail.
        let _ = write!(Escaping(out), "{}", Target(uri));
        return;
    }
    escape(out, path);
    if let Some(q) = query {
        out.push(b'?');
        escape(out, q);
    }
}

/// Microseconds as milliseconds, the JSON number serde_json writes for the `f64`
/// `micros / 1000.0`: `12.0`, `0.151`, `2.5`. Below 10^12 (11 days) that `f64`'s shortest form
/// is the exact decimal (its digits are more than 0.001 apart, an `f64` there far closer), so
/// integer digits do; beyond, the float formatter.
fn millis(out: &mut Vec<u8>, micros: u64) {
    if micros >= 1_000_000_000_000 {
        out.extend_from_slice(
            zmij::Buffer::new()
                .format_finite(micros as f64 / 1000.0)
                .as_bytes(),
        );
        return;
    }
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let mut frac = micros % 1000;
    if frac == 0 {
        out.extend_from_slice(b".0");
        return;
    }
    let mut width = 3;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    out.push(b'.');
    digits(out, frac, width);
}

/// `2026-12-01T21:40:53.123Z` (UTC, milliseconds), as `humantime::format_rfc3339_millis`.
fn rfc3339_millis(time: SystemTime, out: &mut Vec<u8>) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    digits(out, year.clamp(0, 9999) as u64, 4);
    for (sep, n, width) in [
        (b'-', u64::from(month), 2),
        (b'-', u64::from(day), 2),
        (b'T', rem / 3600, 2),
        (b':', rem / 60 % 60, 2),
        (b':', rem % 60, 2),
        (b'.', u64::from(since.subsec_millis()), 3),
    ] {
        out.push(sep);
        digits(out, n, width);
    }
    out.push(b'Z');
}

/// `n` in exactly `width` (at most 4) decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 4];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// A header value's bytes as JSON string contents: invalid UTF-8 becomes U+FFFD, at most
/// `max` characters (`usize::MAX`: no cap, nothing counted).
fn text(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    // Plain ASCII within the cap (nearly every value): one scan, one copy.
    if bytes.len() <= max && !any_special(bytes, true) {
        out.extend_from_slice(bytes);
        return;
    }
    // Valid UTF-8 within the cap: one check, one escape.
    if let Ok(s) = std::str::from_utf8(bytes) {
        if s.len() <= max {
            escape(out, s);
            return;
        }
    }
    let mut left = max;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if max == usize::MAX {
            escape(out, valid);
        } else if left > 0 {
            // A str has at least as many bytes as characters: a short one fits whole.
            let fits = valid.len() <= left;
            match valid.char_indices().nth(left).filter(|_| !fits) {
                Some((cut, _)) => {
                    escape(out, &valid[..cut]);
                    left = 0;
                }
                None => {
                    escape(out, valid);
                    left -= valid.chars().count();
                }
            }
        }
        if !chunk.invalid().is_empty() && left > 0 {
            out.extend_from_slice("\u{fffd}".as_bytes());
            if max != usize::MAX {
                left -= 1;
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// For each byte: 0 when it is copied as it is, else the letter of its escape (`u` for
/// `\u00XX`), as serde_json's table.
const ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as the inside of a JSON string, escaped as serde_json escapes: `"` and `\`,
/// the short forms `\b \f \n \r \t`, other control characters as `\u00XX`; the rest is
/// copied in whole runs.
fn escape(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !any_special(bytes, false) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut plain = 0;
    while let Some(at) = bytes[plain..]
        .iter()
        .position(|&b| ESCAPES[usize::from(b)] != 0)
    {
        let i = plain + at;
        let b = bytes[i];
        out.extend_from_slice(&bytes[plain..i]);
        match ESCAPES[usize::from(b)] {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            letter => out.extend_from_slice(&[b'\\', letter]),
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// Whether `bytes` hold a byte JSON escapes (`"`, `\`, a control character) or, with
/// `non_ascii`, any byte of 0x80 and above; eight bytes at a time, since nearly every field is
/// plain and the byte-by-byte table walk was the line's largest cost.
fn any_special(bytes: &[u8], non_ascii: bool) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// A high bit in each byte of `w` that is zero (exact as to whether there is one).
    fn zero_byte(w: u64) -> u64 {
        w.wrapping_sub(ONES) & !w & HIGH
    }
    let high = if non_ascii { HIGH } else { 0 };
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_ne_bytes(word);
        // Bytes below 0x20: `w - 0x20` borrows into their high bit (a byte of 0x80 and above
        // is cleared by `!w`).
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash | (w & high) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| ESCAPES[usize::from(b)] != 0 || (non_ascii && b >= 0x80))
}

/// `fmt` into JSON string contents: each piece escaped as it is written.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// `fmt` into the buffer unescaped, for text that never needs it (an address).
struct Raw<'a>(&'a mut Vec<u8>);

impl fmt::Write for Raw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::access_line::tests::{hostile, record};
    use crate::observe::access_line::Text;
    use http::{HeaderValue, Method};
    use serde::{Serialize, Serializer};
    use std::net::IpAddr;
    use std::time::Duration;

    /// The line as serde_json writes it: the oracle the hand-written line is held to.
    #[derive(Serialize)]
    struct Oracle<'a> {
        #[serde(serialize_with = "as_str")]
        time: String,
        #[serde(serialize_with = "display")]
        request_id: Text<'a>,
        client_ip: IpAddr,
        method: &'a str,
        #[serde(serialize_with = "display")]
        host: Text<'a>,
        #[serde(serialize_with = "display")]
        target: Target<'a>,
        protocol: &'static str,
        tls: bool,
        route: &'static str,
        status: u16,
        bytes_sent: u64,
        duration_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream_ms: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offload: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'static str>,
        complete: bool,
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "display_opt"
        )]
        user_agent: Option<Text<'a>>,
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "display_opt"
        )]
        referer: Option<Referer<'a>>,
    }

    fn as_str<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }
    fn display<D: fmt::Display, S: Serializer>(v: &D, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    fn display_opt<D: fmt::Display, S: Serializer>(v: &Option<D>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    fn oracle(r: &AccessRecord, time: SystemTime) -> String {
        serde_json::to_string(&Oracle {
            time: humantime::format_rfc3339_millis(time).to_string(),
            request_id: Text::of(&r.request_id),
            client_ip: r.client_ip,
            method: r.method.as_str(),
            host: Text::of(&r.host),
            target: Target(&r.uri),
            protocol: r.protocol,
            tls: r.tls,
            route: r.route,
            status: r.status,
            bytes_sent: r.bytes_sent,
            duration_ms: r.duration_us as f64 / 1000.0,
            upstream_ms: r.upstream_us.map(|us| us as f64 / 1000.0),
            offload: r.offload.as_deref(),
            note: r.note,
            complete: r.complete,
            user_agent: present(&r.user_agent).map(Text::capped),
            referer: present(&r.referer).map(Referer),
        })
        .unwrap()
    }

    fn ours(r: &AccessRecord, time: SystemTime) -> String {
        let mut out = Vec::new();
        write(r, time, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A seeded generator: the same records on every run.
    struct Rng(fastrand::Rng);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0.u64(..)
        }
        /// Bytes a header value may hold (hyper refuses only NUL, CR, LF and DEL-less
        /// controls other than tab), weighted towards the awkward ones.
        fn header(&mut self, len: usize) -> HeaderValue {
            let awkward = b"\"\\\t{}:,\xff\xfe\x80\xc3\xa9\xe2\x82";
            let bytes: Vec<u8> = (0..len)
                .map(|_| match self.next() % 4 {
                    0 => awkward[(self.next() % awkward.len() as u64) as usize],
                    1 => 0x80 + (self.next() % 0x80) as u8,
                    _ => 0x20 + (self.next() % 0x5f) as u8,
                })
                .collect();
            HeaderValue::from_bytes(&bytes).unwrap()
        }
    }

    #[test]
    fn the_line_is_serde_jsons_byte_for_byte() {
        let mut r = record();
        r.upstream_us = Some(1_250);
        r.duration_us = 3_063;
        r.offload = Some("/data/filedir/a\"b".into());
        r.note = Some("rate_limited");
        r.user_agent = Some(HeaderValue::from_static("curl/8"));
        r.referer = Some(HeaderValue::from_static("https://lms/?sesskey=abc&id=1"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_625_253_123);
        assert_eq!(ours(&r, t), oracle(&r, t));
        let mut r = record();
        r.client_ip = "2001:db8::1".parse().unwrap();
        r.method = Method::from_bytes(b"PROPFIND").unwrap();
        r.tls = true;
        r.complete = true;
        assert_eq!(ours(&r, t), oracle(&r, t));
    }

    #[test]
    fn random_header_bytes_give_serde_jsons_line() {
        let mut rng = Rng(fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15));
        for i in 0..2000 {
            let mut r = record();
            let len = (rng.next() % 700) as usize;
            r.user_agent = Some(rng.header(len));
            r.referer = Some(rng.header(len / 2));
            r.host = rng.header(len % 40);
            r.request_id = rng.header(len % 33);
            r.duration_us = rng.next() % 100_000_000;
            r.upstream_us = (i % 3 != 0).then(|| rng.next() % 10_000);
            r.uri = [
                "/",
                "/x?wstoken=abc",
                "/tokenpluginfile.php/abc/1/f.pdf",
                "/a\"b\\c{}|^?q=\\{}",
                "/pluginfile.php/1/a.png?forcedownload=1&x=%22",
                "/login/index.php?ws%74oken=1&access.token=2",
            ][(rng.next() % 6) as usize]
                .parse()
                .unwrap();
            r.client_ip = match rng.next() % 3 {
                0 => IpAddr::from((rng.next() as u32).to_be_bytes()),
                1 => IpAddr::from([0, 0, 0, (rng.next() % 10) as u8]),
                _ => IpAddr::from(
                    (u128::from(rng.next()) << 64 | u128::from(rng.next())).to_be_bytes(),
                ),
            };
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(rng.next() % 4_102_444_800_000);
            let line = ours(&r, t);
            assert_eq!(line, oracle(&r, t), "case {i}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v.get("x").is_none());
        }
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut ours = Vec::new();
        escape(&mut ours, &all);
        let theirs = serde_json::to_string(&all).unwrap();
        assert_eq!(format!("\"{}\"", String::from_utf8(ours).unwrap()), theirs);
    }

    #[test]
    fn durations_are_serde_jsons_numbers() {
        let mut rng = Rng(fastrand::Rng::with_seed(7));
        let some = (0..20_000u64)
            .chain([
                999_999_999_999,
                1_000_000_000_000,
                86_400_000_000_000,
                u64::MAX,
            ])
            .chain((0..20_000).map(|_| rng.next() % 1_000_000_000_000))
            .collect::<Vec<_>>();
        let some = some.into_iter().chain((0..2_000).map(|_| rng.next()));
        for us in some {
            let mut ours = Vec::new();
            millis(&mut ours, us);
            let theirs = serde_json::to_string(&(us as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{us} us");
        }
    }

    #[test]
    fn the_word_scan_finds_what_the_table_finds() {
        let mut rng = Rng(fastrand::Rng::with_seed(11));
        for _ in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| 0x20 + (rng.next() % 0x5f) as u8).collect();
            if len > 0 && rng.next() % 2 == 0 {
                let at = (rng.next() as usize) % len;
                let awkward = b"\"\\\x00\x1f\t\x7f\x80\xff ";
                bytes[at] = awkward[(rng.next() % awkward.len() as u64) as usize];
            }
            for non_ascii in [false, true] {
                let table = bytes
                    .iter()
                    .any(|&b| ESCAPES[usize::from(b)] != 0 || (non_ascii && b >= 0x80));
                assert_eq!(any_special(&bytes, non_ascii), table, "{bytes:?}");
            }
        }
    }

    #[test]
    fn times_match_humantime() {
        for ms in [
            0u64,
            999,
            1_709_210_096_001,
            951_825_600_500,
            4_102_444_799_999,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            rfc3339_millis(t, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }

    #[test]
    fn json_fields_and_redaction() {
        let mut r = record();
        r.referer = Some(HeaderValue::from_static(
            "https://lms/v.php?id=2&sesskey=abc",
        ));
        r.user_agent = Some(HeaderValue::from_static("curl/8"));
        let v: serde_json::Value = serde_json::from_str(&ours(&r, SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["target"], "/x?wstoken=[redacted]");
        assert_eq!(v["referer"], "https://lms/v.php?id=2&sesskey=[redacted]");
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["request_id"], "r1");
        assert!(v.get("upstream_ms").is_none());
    }

    #[test]
    fn hostile_header_bytes_stay_valid_json_inside_their_field() {
        let mut r = record();
        r.user_agent = Some(hostile());
        r.referer = Some(hostile());
        r.host = hostile();
        r.request_id = hostile();
        // The path may hold quotes and backslashes (hyper passes them), the query backslashes.
        r.uri = "/a\"b\\c{}|^?q=\\{}".parse().unwrap();
        let text = ours(&r, SystemTime::UNIX_EPOCH);
        assert!(!text.contains('\n'));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            v["user_agent"],
            "a\"b\\c\td\u{fffd}\u{fffd}\u{fffd}e\"}\\\",\"x\":\""
        );
        assert_eq!(v["host"], v["user_agent"]);
        assert!(v.get("x").is_none(), "no field injected: {text}");
        assert_eq!(v["target"], "/a\"b\\c{}|^?q=\\{}");
    }

    #[test]
    fn long_header_values_are_capped() {
        let mut r = record();
        r.user_agent = Some(HeaderValue::from_str(&"é".repeat(2000)).unwrap());
        let v: serde_json::Value = serde_json::from_str(&ours(&r, SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(
            v["user_agent"].as_str().unwrap().chars().count(),
            HEADER_CHARS
        );
    }
}
