//! Token handling: the only two forms a token takes inside the edge.
//!
//! A raw token never leaves this process: logs and metrics get [`fingerprint`], and limits and
//! the network check key on [`normalize`], which is what Moodle would look up.

use sha2::{Digest, Sha256};

/// Longest token Moodle can store (`external_tokens.token` is 128 characters); anything longer
/// cannot match a token, so it is not worth a limiter key.
pub(crate) const MAX_TOKEN_LEN: usize = 128;

/// First 12 hex characters of SHA-256: enough to tell tokens apart in an audit log, useless for
/// calling Moodle. The only form in which a token may appear in logs, metrics or pages.
pub(crate) fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = hex::encode(&digest[..6]);
    out.truncate(12);
    out
}

/// The form of a token the edge keys on: ASCII letters and digits only, lower-cased.
///
/// Why: Moodle's file endpoints clean the token with `PARAM_ALPHANUM` (drops every other
/// character) and a case-insensitive database collation matches upper case too. Keying on the
/// cleaned form means `abc-DEF…` cannot slip past a `token_networks` rule that names `abcdef…`.
/// Returns `None` when nothing is left or the result is too long to be a token.
pub(crate) fn normalize(raw: &str) -> Option<String> {
    let clean = raw
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let out: String = if clean {
        raw.to_owned()
    } else {
        raw.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    if out.is_empty() || out.len() > MAX_TOKEN_LEN {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_12_hex() {
        let fp = fingerprint("0123456789abcdef0123456789abcdef");
        assert_eq!(fp.len(), 12);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(fp, fingerprint("0123456789abcdef0123456789abcdee"));
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    }

    #[test]
    fn normalize_like_param_alphanum() {
        assert_eq!(normalize("abc-DEF 1").as_deref(), Some("abcdef1"));
        assert_eq!(normalize("abcdef").as_deref(), Some("abcdef"));
        assert_eq!(normalize("--"), None);
        assert_eq!(normalize(&"a".repeat(129)), None);
    }
}
