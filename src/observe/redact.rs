//! Secrets never reach a log: query parameters and path segments that carry tokens, keys,
//! session keys or passwords are replaced before a line is written.

use std::borrow::Cow;

/// Parameter names whose values are secrets in Moodle and in the SSO flows.
const SECRET_PARAMS: &[&str] = &[
    "wstoken",
    "token",
    "key",
    "sesskey",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "code",
    "state",
    "samlresponse",
    "samlrequest",
    "privatetoken",
    "access_token",
    "refresh_token",
    "id_token",
];

pub const REDACTED: &str = "[redacted]";

fn is_secret(name: &str) -> bool {
    // Compare the name PHP sees: percent-decoded (`ws%74oken` is `wstoken` to Moodle), with
    // the array brackets cut off and `.`/space read as `_` (`access.token` is `access_token`).
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let base = decoded
        .split('[')
        .next()
        .unwrap_or(&decoded)
        .trim_start_matches(' ');
    SECRET_PARAMS.iter().any(|s| {
        s.len() == base.len()
            && s.bytes().zip(base.bytes()).all(|(s, b)| match b {
                b'.' | b' ' => s == b'_',
                b => s.eq_ignore_ascii_case(&b),
            })
    })
}

/// Redacts secret values in an `a=1&b=2` string (a query string or an urlencoded body).
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if !query
        .split('&')
        .any(|pair| is_secret(pair.split('=').next().unwrap_or("")))
    {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// Redacts a request target (path and query). Moodle's `/tokenpluginfile.php/<token>/...`
/// carries the token as the first path segment.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    match path.strip_prefix("/tokenpluginfile.php/") {
        Some(rest) => {
            out.push_str("/tokenpluginfile.php/");
            out.push_str(REDACTED);
            if let Some(slash) = rest.find('/') {
                out.push_str(&rest[slash..]);
            }
        }
        None => out.push_str(path),
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_query(q));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_secrets_are_replaced() {
        assert_eq!(
            redact_query("wstoken=abc&wsfunction=core_webservice_get_site_info"),
            "wstoken=[redacted]&wsfunction=core_webservice_get_site_info"
        );
        assert_eq!(redact_query("a=1&b=2"), "a=1&b=2");
        assert_eq!(
            redact_query("SESSKEY=x&Password=y"),
            "SESSKEY=[redacted]&Password=[redacted]"
        );
        assert_eq!(redact_query("key"), "key");
        assert_eq!(
            redact_query("token=1&tokenish=2"),
            "token=[redacted]&tokenish=2"
        );
        assert_eq!(
            redact_query("ws%74oken=abc&x=1"),
            "ws%74oken=[redacted]&x=1"
        );
        assert_eq!(
            redact_query("pass%77ord%5B0%5D=abc"),
            "pass%77ord%5B0%5D=[redacted]"
        );
        assert_eq!(redact_query("access.token=abc"), "access.token=[redacted]");
    }

    #[test]
    fn tokenpluginfile_path_is_redacted() {
        assert_eq!(
            redact_target(
                "/tokenpluginfile.php/0123abcd/12/mod_resource/content/0/a.pdf",
                None
            ),
            "/tokenpluginfile.php/[redacted]/12/mod_resource/content/0/a.pdf"
        );
        assert_eq!(
            redact_target(
                "/webservice/pluginfile.php/1/a.pdf",
                Some("token=zz&forcedownload=1")
            ),
            "/webservice/pluginfile.php/1/a.pdf?token=[redacted]&forcedownload=1"
        );
    }
}
