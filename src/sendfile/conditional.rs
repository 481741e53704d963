//! Preconditions (RFC 9110 §13.2.2), evaluated in the RFC's order, and If-Range (§13.1.5).
//!
//! Only for a 200 the proxy is about to send from a file it has opened: the validators are the
//! response's own ETag and Last-Modified. Differences from nginx, on purpose:
//! - If-Modified-Since answers 304 when the file is not newer (RFC), where nginx's default
//!   `if_modified_since exact` wants the exact date.

use std::time::SystemTime;

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, Method};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Serve the representation (the range step comes next).
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a state-changing precondition failed.
    Failed,
}

/// The validators of the representation being served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validators<'a> {
    /// A strong entity-tag, quotes included (`"abc"`).
    pub etag: &'a str,
    /// Whole seconds: HTTP dates have no fractions, so comparing finer would never match.
    pub last_modified: Option<SystemTime>,
}

/// RFC 9110 §13.2.2 steps 1-4.
pub(crate) fn evaluate(method: &Method, headers: &HeaderMap, v: Validators<'_>) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;

    // 1. If-Match: strong comparison; `*` matches because the file exists.
    if headers.contains_key(IF_MATCH) {
        if !list_matches(headers, IF_MATCH, v.etag, Compare::Strong) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) =
        (date(headers, IF_UNMODIFIED_SINCE), v.last_modified)
    {
        // 2. If-Unmodified-Since, only without If-Match.
        if modified > since {
            return Precondition::Failed;
        }
    }

    // 3. If-None-Match: weak comparison.
    if headers.contains_key(IF_NONE_MATCH) {
        if list_matches(headers, IF_NONE_MATCH, v.etag, Compare::Weak) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        // 4. If-Modified-Since, only without If-None-Match and only for GET/HEAD.
        if let (Some(since), Some(modified)) = (date(headers, IF_MODIFIED_SINCE), v.last_modified) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// If-Range: true when the range may be served. An entity-tag must match strongly (a weak tag
/// never does); a date must equal Last-Modified exactly. Anything unparsable does not match, so
/// the client safely gets the whole file.
pub(crate) fn if_range_allows(value: &str, v: Validators<'_>) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !value.starts_with("W/") && value == v.etag;
    }
    match (httpdate::parse_http_date(value), v.last_modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// Truncates a file time to whole seconds, the precision of Last-Modified.
pub(crate) fn whole_seconds(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs()),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// A single valid HTTP-date, or `None` (the RFC says to ignore an invalid one).
fn date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Strong,
    Weak,
}

/// Whether any entity-tag in every line of `name` matches ours. A malformed list matches
/// nothing: for If-Match that is a 412, for If-None-Match a normal 200, both safe.
fn list_matches(
    headers: &HeaderMap,
    name: http::header::HeaderName,
    ours: &str,
    cmp: Compare,
) -> bool {
    let (ours_weak, ours_opaque) = split_weak(ours);
    headers.get_all(name).iter().any(|line| {
        let Ok(line) = line.to_str() else {
            return false;
        };
        if line.trim() == "*" {
            return true;
        }
        entity_tags(line).is_some_and(|tags| {
            tags.iter().any(|(weak, opaque)| match cmp {
                Compare::Strong => !weak && !ours_weak && *opaque == ours_opaque,
                Compare::Weak => *opaque == ours_opaque,
            })
        })
    })
}

/// `W/"x"` -> (true, `"x"`), `"x"` -> (false, `"x"`).
fn split_weak(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// Parses `#entity-tag`. Commas may appear inside the quotes, so this scans rather than splits.
fn entity_tags(mut text: &str) -> Option<Vec<(bool, &str)>> {
    let mut tags = Vec::new();
    loop {
        text = text.trim_start_matches([' ', '\t', ',']);
        if text.is_empty() {
            return Some(tags);
        }
        let weak = text.starts_with("W/");
        if weak {
            text = &text[2..];
        }
        if !text.starts_with('"') {
            return None;
        }
        let close = text[1..].find('"')? + 2;
        tags.push((weak, &text[..close]));
        text = &text[close..];
        let after = text.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with(',')) {
            return None;
        }
        text = after;
    }
}

/// Whether `tag` is a syntactically valid strong entity-tag (`"` etagc* `"`).
pub(crate) fn is_strong_etag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    bytes.len() >= 2
        && bytes[0] == b'"'
        && bytes[bytes.len() - 1] == b'"'
        && bytes[1..bytes.len() - 1]
            .iter()
            .all(|b| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ETAG: &str = "\"abc\"";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn v() -> Validators<'static> {
        Validators {
            etag: ETAG,
            last_modified: Some(at(1_700_000_000)),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn date_of(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn eval(pairs: &[(&str, &str)]) -> Precondition {
        evaluate(&Method::GET, &headers(pairs), v())
    }

    #[test]
    fn none_means_proceed() {
        assert_eq!(eval(&[]), Precondition::Proceed);
    }

    #[test]
    fn if_match() {
        assert_eq!(eval(&[("if-match", "\"abc\"")]), Precondition::Proceed);
        assert_eq!(
            eval(&[("if-match", "\"x\", \"abc\"")]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[("if-match", "\"x\""), ("if-match", "\"abc\"")]),
            Precondition::Proceed
        );
        assert_eq!(eval(&[("if-match", "*")]), Precondition::Proceed);
        assert_eq!(eval(&[("if-match", "W/\"abc\"")]), Precondition::Failed);
        assert_eq!(eval(&[("if-match", "\"x\"")]), Precondition::Failed);
        assert_eq!(eval(&[("if-match", "garbage")]), Precondition::Failed);
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            eval(&[
                ("if-match", "\"abc\""),
                ("if-unmodified-since", &date_of(1))
            ]),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(
            eval(&[("if-unmodified-since", &date_of(1_700_000_000))]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[("if-unmodified-since", &date_of(1_600_000_000))]),
            Precondition::Failed
        );
        assert_eq!(
            eval(&[("if-unmodified-since", "yesterday")]),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_none_match() {
        assert_eq!(
            eval(&[("if-none-match", "\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[("if-none-match", "W/\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[("if-none-match", "\"a,b\", \"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(eval(&[("if-none-match", "*")]), Precondition::NotModified);
        assert_eq!(eval(&[("if-none-match", "\"x\"")]), Precondition::Proceed);
        // If-None-Match present: If-Modified-Since is not looked at.
        assert_eq!(
            eval(&[
                ("if-none-match", "\"x\""),
                ("if-modified-since", &date_of(1_800_000_000))
            ]),
            Precondition::Proceed
        );
        let post = evaluate(
            &Method::POST,
            &headers(&[("if-none-match", "\"abc\"")]),
            v(),
        );
        assert_eq!(post, Precondition::Failed);
    }

    #[test]
    fn if_modified_since() {
        assert_eq!(
            eval(&[("if-modified-since", &date_of(1_700_000_000))]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[("if-modified-since", &date_of(1_800_000_000))]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[("if-modified-since", &date_of(1_600_000_000))]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[("if-modified-since", "not a date")]),
            Precondition::Proceed
        );
        let head = evaluate(
            &Method::HEAD,
            &headers(&[("if-modified-since", &date_of(1_700_000_000))]),
            v(),
        );
        assert_eq!(head, Precondition::NotModified);
    }

    #[test]
    fn order_if_match_before_if_none_match() {
        assert_eq!(
            eval(&[("if-match", "\"x\""), ("if-none-match", "\"abc\"")]),
            Precondition::Failed
        );
    }

    #[test]
    fn if_range() {
        assert!(if_range_allows("\"abc\"", v()));
        assert!(!if_range_allows("W/\"abc\"", v()));
        assert!(!if_range_allows("\"x\"", v()));
        assert!(if_range_allows(&date_of(1_700_000_000), v()));
        assert!(!if_range_allows(&date_of(1_700_000_001), v()));
        assert!(!if_range_allows("garbage", v()));
    }

    #[test]
    fn strong_etags() {
        assert!(is_strong_etag("\"08f5ab\""));
        assert!(is_strong_etag("\"\""));
        assert!(!is_strong_etag("W/\"x\""));
        assert!(!is_strong_etag("x"));
        assert!(!is_strong_etag("\"a\"b\""));
        assert!(!is_strong_etag("\""));
    }

    #[test]
    fn seconds() {
        let t = at(5) + Duration::from_millis(900);
        assert_eq!(whole_seconds(t), at(5));
    }
}
