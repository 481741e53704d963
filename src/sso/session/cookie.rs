//! The session cookie: `__Host-` prefixed over TLS (so no subdomain or path can set or shadow
//! it), always HttpOnly and SameSite=Lax (sent on the top-level GET back from a provider, not
//! on cross-site POSTs).

use http::HeaderValue;

use super::SessionId;

/// The cookie's name: the `__Host-` prefix needs Secure, so it is only used over TLS.
pub(crate) fn name(secure: bool) -> &'static str {
    if secure {
        "__Host-moodle-edge-sso"
    } else {
        "moodle-edge-sso"
    }
}

/// Set-Cookie for a new session.
pub(crate) fn set(id: &SessionId, secure: bool, max_age_secs: u64) -> HeaderValue {
    let v = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        name(secure),
        id.as_str(),
        if secure { "; Secure" } else { "" }
    );
    // Hex id and fixed text: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// Set-Cookie that removes the session cookie.
pub(crate) fn clear(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "__Host-moodle-edge-sso=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("moodle-edge-sso=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_cookie_is_host_prefixed_secure_httponly_lax() {
        let id = SessionId::new();
        let v = set(&id, true, 3600);
        let s = v.to_str().unwrap_or_default();
        assert!(s.starts_with("__Host-moodle-edge-sso="));
        for attr in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!s.contains("Domain"));
    }

    #[test]
    fn plain_http_cookie_has_no_prefix_and_no_secure() {
        let s = set(&SessionId::new(), false, 60);
        let s = s.to_str().unwrap_or_default();
        assert!(s.starts_with("moodle-edge-sso="));
        assert!(!s.contains("Secure"));
    }
}
