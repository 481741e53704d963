//! Secrets never reach a log: query parameters and path segments that carry tokens, keys,
//! session keys or passwords are replaced before a line is written.

use std::fmt;

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

pub(crate) const REDACTED: &str = "[redacted]";

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

#[cfg(test)]
/// Redacts secret values in an `a=1&b=2` string (a query string or an urlencoded body).
pub(crate) fn redact_query(query: &str) -> std::borrow::Cow<'_, str> {
    if !has_secret(query) {
        return std::borrow::Cow::Borrowed(query);
    }
    std::borrow::Cow::Owned(RedactedQuery(query).to_string())
}

fn has_secret(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| is_secret(pair.split('=').next().unwrap_or("")))
}

/// A query string written with its secret values replaced, without building a copy first.
struct RedactedQuery<'a>(&'a str);

impl fmt::Display for RedactedQuery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !has_secret(self.0) {
            return f.write_str(self.0);
        }
        for (i, pair) in self.0.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret(name) => write!(f, "{name}={REDACTED}")?,
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// Redacts a request target (path and query). Moodle's `/tokenpluginfile.php/<token>/...`
/// carries the token as the first path segment.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    RedactedTarget { path, query }.to_string()
}

/// Whether [`RedactedTarget`] would change this target (a tokenpluginfile token or a secret
/// query parameter): when not, a writer may copy it as it is.
pub(crate) fn needs_redaction(path: &str, query: Option<&str>) -> bool {
    path.starts_with("/tokenpluginfile.php/") || query.is_some_and(has_secret)
}

/// A request target as the logs write it: [`redact_target`] straight into the line.
pub(crate) struct RedactedTarget<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl fmt::Display for RedactedTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.strip_prefix("/tokenpluginfile.php/") {
            Some(rest) => {
                write!(f, "/tokenpluginfile.php/{REDACTED}")?;
                if let Some(slash) = rest.find('/') {
                    f.write_str(&rest[slash..])?;
                }
            }
            None => f.write_str(self.path)?,
        }
        if let Some(q) = self.query {
            write!(f, "?{}", RedactedQuery(q))?;
        }
        Ok(())
    }
}

/// A URL (a Referer) with its query secrets and a tokenpluginfile token redacted: Moodle puts
/// sesskey (and tokens) in page URLs, so the Referer carries them.
pub(crate) struct RedactedUrl<'a>(pub &'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (url, query) = match self.0.split_once('?') {
            Some((url, query)) => (url, Some(query)),
            None => (self.0, None),
        };
        let path_start = url.find("://").map_or(0, |i| i + 3);
        let path_start = url[path_start..]
            .find('/')
            .map_or(url.len(), |i| path_start + i);
        f.write_str(&url[..path_start])?;
        RedactedTarget {
            path: &url[path_start..],
            query,
        }
        .fmt(f)
    }
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
    fn referer_secrets_are_redacted() {
        let r = |u: &str| RedactedUrl(u).to_string();
        assert_eq!(
            r("https://lms/course/view.php?id=2&sesskey=abc"),
            "https://lms/course/view.php?id=2&sesskey=[redacted]"
        );
        assert_eq!(
            r("https://lms/tokenpluginfile.php/abc/1/a.pdf"),
            "https://lms/tokenpluginfile.php/[redacted]/1/a.pdf"
        );
        assert_eq!(
            r("https://lms/course/view.php?id=2"),
            "https://lms/course/view.php?id=2"
        );
        assert_eq!(r(""), "");
        assert_eq!(r("lms"), "lms");
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
