//! /auth/logout: GET shows a confirmation form (it carries the session's CSRF token); POST with
//! that token ends the edge session, then Moodle's (its own logout with its sesskey, and the
//! cookie removed), then the provider's (OIDC end-session with id_token_hint, or SAML SLO),
//! and lands on the login page saying "signed out".

use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderValue, Method, Response, StatusCode};
use subtle_eq::constant_time_eq;

use crate::body::{self, ProxyBody};

use super::browser::BrowserRequest;
use super::failure::simple_page;
use super::html::escape;
use super::identity::ProtocolHandle;
use super::oidc::flow::redirect_with_cookies;
use super::session::{self, cookie};
use super::{oidc, saml, SsoState};

/// Comparison that takes the same time wherever the strings differ.
mod subtle_eq {
    pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Where a finished logout lands.
fn after_logout(browser: &BrowserRequest) -> String {
    let scheme = if browser.secure { "https" } else { "http" };
    format!("{scheme}://{}/auth/login?logged_out=1", browser.authority)
}

/// Set-Cookie values that remove the edge and the Moodle session cookies.
pub(crate) fn clearing_cookies(sso: &SsoState, secure: bool) -> Vec<String> {
    // Moodle's default $CFG->sessioncookiepath: wwwroot's path with a trailing slash.
    let path = format!("{}/", sso.wwwroot.path);
    let mut v = vec![
        cookie::clear(secure)
            .to_str()
            .unwrap_or_default()
            .to_string(),
        format!(
            "{}=; Path={path}; HttpOnly; Max-Age=0{}",
            sso.config.moodle_session_cookie,
            if secure { "; Secure" } else { "" }
        ),
    ];
    if path != "/" {
        // Also a cookie set at the root (a site moved under a path keeps old cookies).
        v.push(format!(
            "{}=; Path=/; Max-Age=0",
            sso.config.moodle_session_cookie
        ));
    }
    v
}

pub(crate) async fn handle(
    sso: &SsoState,
    browser: &BrowserRequest,
    body: &[u8],
) -> Response<ProxyBody> {
    let current = session::current(sso, browser).await;
    if browser.method == Method::GET || browser.method == Method::HEAD {
        return match current {
            Some(c) => confirm_page(&c.session.csrf, &browser.request_id),
            None => redirect_with_cookies(&after_logout(browser), &[]),
        };
    }
    if browser.method != Method::POST {
        return simple_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "Sign out with POST.",
            &browser.request_id,
        );
    }
    let Some(current) = current else {
        return redirect_with_cookies(
            &after_logout(browser),
            &clearing_cookies(sso, browser.secure),
        );
    };
    let token = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !constant_time_eq(token.as_bytes(), current.session.csrf.as_bytes()) {
        tracing::warn!(request_id = %browser.request_id, "sso: logout without a valid CSRF token refused");
        return simple_page(
            StatusCode::FORBIDDEN,
            "Sign-out not confirmed",
            "The sign-out request did not come from this site's sign-out page.",
            &browser.request_id,
        );
    }
    end_everything(sso, browser, &current.id, &current.session, "edge").await
}

/// Ends the edge session, Moodle's, then sends the browser to the provider's logout.
pub(crate) async fn end_everything(
    sso: &SsoState,
    browser: &BrowserRequest,
    id: &session::SessionId,
    s: &session::Session,
    how: &str,
) -> Response<ProxyBody> {
    if let Err(e) = sso.sessions.end(id).await {
        tracing::error!(request_id = %browser.request_id, error = %e, "sso: session not ended");
    }
    sso.metrics.logout(&s.provider, how, 1);
    let moodle_cookie = browser
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| c.starts_with(&format!("{}=", sso.config.moodle_session_cookie)))
        .collect::<Vec<_>>()
        .join("; ");
    if !moodle_cookie.is_empty() {
        let ended = sso
            .handoff
            .end_moodle_session(&sso.http, &moodle_cookie)
            .await;
        tracing::info!(request_id = %browser.request_id, moodle_session_ended = ended, "sso: edge logout");
    }
    let cookies = clearing_cookies(sso, browser.secure);
    match &s.handle {
        ProtocolHandle::Oidc { id_token, .. } => {
            if let Some(p) = sso.oidc.get(&s.provider) {
                if let Some(url) =
                    oidc::logout::end_session_url(&sso.http, p, id_token, &after_logout(browser))
                        .await
                {
                    return redirect_with_cookies(&url, &cookies);
                }
            }
        }
        ProtocolHandle::Saml { .. } => {
            if let Some(mut resp) = saml::logout_redirect(sso, browser, s).await {
                for c in &cookies {
                    if let Ok(v) = HeaderValue::from_str(c) {
                        resp.headers_mut().append(SET_COOKIE, v);
                    }
                }
                return resp;
            }
        }
        ProtocolHandle::OAuth2 { .. } => {}
    }
    redirect_with_cookies(&after_logout(browser), &cookies)
}

fn confirm_page(csrf: &str, request_id: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign out</title></head>\n\
<body><main><h1>Sign out</h1><p>Sign out of this site and of your organisation's sign-in?</p>\n\
<form method=\"post\" action=\"/auth/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\">Sign out</button></form>\n<p><small>Request id: {}</small></p></main></body></html>\n",
        escape(csrf),
        escape(request_id)
    );
    let mut resp = Response::new(body::full(html));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
