//! Which requests are web-service calls.

/// The kind of web-service entry point a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Rest,
    Soap,
    XmlRpc,
    Pluginfile,
    Token,
    Extra,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Rest => "rest",
            EntryKind::Soap => "soap",
            EntryKind::XmlRpc => "xmlrpc",
            EntryKind::Pluginfile => "pluginfile",
            EntryKind::Token => "token",
            EntryKind::Extra => "extra",
        }
    }

    /// The parameter that carries the token: Moodle's file endpoints read `token`, the servers
    /// read `wstoken`. Extra entry points are read as `wstoken`, falling back to `token`.
    pub fn token_param(self) -> Option<&'static str> {
        match self {
            EntryKind::Rest | EntryKind::Soap | EntryKind::XmlRpc | EntryKind::Extra => {
                Some("wstoken")
            }
            EntryKind::Pluginfile => Some("token"),
            EntryKind::Token => None,
        }
    }
}

const BUILT_IN: [(&str, EntryKind); 5] = [
    ("/webservice/rest/server.php", EntryKind::Rest),
    ("/webservice/soap/server.php", EntryKind::Soap),
    ("/webservice/xmlrpc/server.php", EntryKind::XmlRpc),
    ("/webservice/pluginfile.php", EntryKind::Pluginfile),
    ("/login/token.php", EntryKind::Token),
];

/// Classifies a request path (the query, if any, is cut off first).
///
/// A path matches an entry point exactly, or with a path-info tail (`/webservice/pluginfile.php/
/// 12/mod_resource/...`): PHP runs the same script for both, and pluginfile URLs always carry one.
/// Paths with `//`, dot segments or `%` are normalised first, the way the web server in front of
/// PHP resolves them, so `/webservice//rest/server.php` or `server%2Ephp` cannot skip the guard.
pub fn classify(path: &str, extra: &[String]) -> Option<EntryKind> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if needs_normalizing(path) {
        let normal = normalize_path(path);
        return classify_clean(&normal, extra);
    }
    classify_clean(path, extra)
}

fn classify_clean(path: &str, extra: &[String]) -> Option<EntryKind> {
    if !path.starts_with("/webservice/") && !path.starts_with("/login/") && extra.is_empty() {
        return None;
    }
    for (entry, kind) in BUILT_IN {
        if path_matches(path, entry) {
            return Some(kind);
        }
    }
    extra
        .iter()
        .any(|e| path_matches(path, e))
        .then_some(EntryKind::Extra)
}

/// The entry point a path names, as written in config (`function_policy[].path` keys on it).
pub fn entry_path<'a>(path: &str, extra: &'a [String]) -> Option<&'a str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let normal;
    let path = if needs_normalizing(path) {
        normal = normalize_path(path);
        normal.as_str()
    } else {
        path
    };
    BUILT_IN
        .iter()
        .map(|(e, _)| *e)
        .chain(extra.iter().map(String::as_str))
        .find(|e| path_matches(path, e))
}

fn path_matches(path: &str, entry: &str) -> bool {
    match path.strip_prefix(entry) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// True when the path has `//`, `/.` or a `%`: one pass over the bytes (every request's path
/// is classified, and three substring searches cost more than the path is long).
fn needs_normalizing(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'%' || (b == b'/' && matches!(bytes.get(i + 1), Some(b'/' | b'.'))))
}

/// Percent-decodes once, collapses repeated slashes and resolves `.` / `..` segments.
fn normalize_path(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The answer format the client asked for (`moodlewsrestformat`); token.php always speaks JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsFormat {
    Json,
    #[default]
    Xml,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_normalizing_agrees_with_the_substring_rules() {
        for path in [
            "/",
            "",
            "//",
            "/.",
            "%",
            "/a/b",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a.b/c",
            "a/",
            "/a/",
            "/webservice/rest/server.php",
            "/webservice/rest/server.php%00",
            "/x/.hidden",
            "./",
            "/a/b/",
            "/a/b/.",
            "/a/b//",
            "%2e",
            ".",
        ] {
            let expected = path.contains("//") || path.contains("/.") || path.contains('%');
            assert_eq!(needs_normalizing(path), expected, "{path:?}");
        }
    }

    #[test]
    fn built_in_entries() {
        assert_eq!(
            classify("/webservice/rest/server.php", &[]),
            Some(EntryKind::Rest)
        );
        assert_eq!(
            classify("/webservice/rest/server.php?wstoken=x", &[]),
            Some(EntryKind::Rest)
        );
        assert_eq!(
            classify("/webservice/soap/server.php", &[]),
            Some(EntryKind::Soap)
        );
        assert_eq!(
            classify("/webservice/xmlrpc/server.php", &[]),
            Some(EntryKind::XmlRpc)
        );
        assert_eq!(
            classify(
                "/webservice/pluginfile.php/12/mod_resource/content/0/a.pdf",
                &[]
            ),
            Some(EntryKind::Pluginfile)
        );
        assert_eq!(classify("/login/token.php", &[]), Some(EntryKind::Token));
        assert_eq!(classify("/login/index.php", &[]), None);
        assert_eq!(classify("/webservice/rest/server.phpx", &[]), None);
        assert_eq!(classify("/pluginfile.php/1/a", &[]), None);
    }

    #[test]
    fn extra_entries() {
        let extra = vec!["/local/api/server.php".to_string()];
        assert_eq!(
            classify("/local/api/server.php", &extra),
            Some(EntryKind::Extra)
        );
        assert_eq!(classify("/local/api/server.phpx", &extra), None);
        assert_eq!(
            entry_path("/local//api/server.php/x", &extra),
            Some("/local/api/server.php")
        );
    }

    #[test]
    fn tricks_are_normalised() {
        assert_eq!(
            classify("/webservice//rest/server.php", &[]),
            Some(EntryKind::Rest)
        );
        assert_eq!(
            classify("/webservice/x/../rest/server.php", &[]),
            Some(EntryKind::Rest)
        );
        assert_eq!(
            classify("/webservice/rest/server%2Ephp", &[]),
            Some(EntryKind::Rest)
        );
        assert_eq!(
            classify("/webservice/./rest/server.php", &[]),
            Some(EntryKind::Rest)
        );
    }
}
