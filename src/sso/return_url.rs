//! The return URL a login ends at. auth_userkey follows `wantsurl` unchecked (an absolute URL
//! anywhere gets a redirect there), so the edge only ever hands it a same-site path: this is
//! the one place that decides what "same-site" means.
//!
//! Accepted: a path that starts with exactly one `/` (and lies under wwwroot's path), or an
//! absolute URL that starts with wwwroot itself followed by `/`, `?`, `#` or nothing. Refused:
//! `//host`, `/\host`, any scheme other than wwwroot's own prefix, userinfo tricks, suffix
//! look-alikes, control characters, whitespace and backslashes anywhere, and all of these in
//! percent-encoded form (decoded twice, as a browser and then Moodle each decode once).

use percent_encoding::percent_decode_str;
use url::Url;

/// The site's wwwroot, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Wwwroot {
    /// Without a trailing slash, lower-case scheme and host: `https://lms.example.edu/moodle`.
    pub prefix: String,
    /// Its path without a trailing slash ("" at the root).
    pub path: String,
    pub url: Url,
}

impl Wwwroot {
    pub(crate) fn parse(s: &str) -> Result<Wwwroot, String> {
        let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{s:?} must be an http(s) URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!("{s:?} must have no query, fragment or user"));
        }
        let path = url.path().trim_end_matches('/').to_string();
        let mut prefix = url.origin().ascii_serialization();
        prefix.push_str(&path);
        Ok(Wwwroot { prefix, path, url })
    }

    /// The absolute URL of a validated return path.
    pub(crate) fn absolute(&self, path: &str) -> String {
        let mut s = self.url.origin().ascii_serialization();
        s.push_str(path);
        s
    }
}

/// The path (with query) to return to, or None when `raw` is not a same-site URL. Paths are
/// returned absolute from the host's root (wwwroot's path included).
pub(crate) fn validate(wwwroot: &Wwwroot, raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > 2048 {
        return None;
    }
    // Anything a browser or Moodle may read as a separator or strip, in any decoding.
    let once = percent_decode_str(raw).decode_utf8().ok()?;
    let twice = percent_decode_str(&once).decode_utf8().ok()?;
    for form in [raw, &once, &twice] {
        if form
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
    }
    let lower = raw.to_ascii_lowercase();
    let path = if lower.starts_with(&wwwroot.prefix.to_ascii_lowercase()) {
        let rest = &raw[wwwroot.prefix.len()..];
        match rest.chars().next() {
            None => format!("{}/", wwwroot.path),
            Some('/' | '?' | '#') => format!("{}{}", wwwroot.path, rest),
            // `https://lms.example.edu.evil`, `https://lms.example.edu@evil`, `:8443`.
            Some(_) => return None,
        }
    } else {
        raw.to_string()
    };
    // A single leading slash, in every decoding: `//host` and `/%2F%2Fhost` are other hosts.
    let path_once = percent_decode_str(&path).decode_utf8().ok()?.into_owned();
    let path_twice = percent_decode_str(&path_once)
        .decode_utf8()
        .ok()?
        .into_owned();
    for form in [path.clone(), path_once, path_twice] {
        let f = form.as_str();
        if !f.starts_with('/') || f.starts_with("//") {
            return None;
        }
    }
    // Must stay on wwwroot's origin and under its path once resolved as a browser would.
    let resolved = wwwroot.url.join(&path).ok()?;
    if resolved.origin() != wwwroot.url.origin() {
        return None;
    }
    let under = resolved.path() == wwwroot.path
        || resolved.path().starts_with(&format!("{}/", wwwroot.path));
    if !under {
        return None;
    }
    // The edge's own login paths would only loop back into a login.
    if resolved
        .path()
        .starts_with(&format!("{}/auth/", wwwroot.path))
        && !resolved
            .path()
            .starts_with(&format!("{}/auth/userkey/", wwwroot.path))
    {
        return None;
    }
    let mut out = resolved.path().to_string();
    if let Some(q) = resolved.query() {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests;
