//! The one way every login ends, whatever the protocol: rules check -> Moodle hand-off ->
//! a new session with a fresh id -> redirect to auth_userkey's login URL with the validated
//! return URL as `wantsurl`. Protocol modules call [`finish_login`] and nothing else.

use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

use super::browser::BrowserRequest;
use super::failure::{login_failed, FailureReason};
use super::handoff::{HandoffError, HandoffUser};
use super::identity::{Identity, LoginStart};
use super::session::{self, cookie};
use super::{return_url, rules, SsoState};

/// Finishes a login that a protocol has verified.
///
/// `start` is what the login page handed the protocol when the person chose the provider
/// (carried through the round trip by the protocol); `identity` is what the provider vouched
/// for. This function:
/// 1. refuses an identity from another provider or tenant than `start` names;
/// 2. applies the provider's rules (required claim values, email domains);
/// 3. asks Moodle (auth_userkey) for a one-time login URL, with `user[ip]` when configured;
///    Moodle's refusal becomes a clear error page (never a redirect back into a login);
/// 4. ends the browser's previous edge session, if any, and makes a new one with a fresh id;
/// 5. answers 303 to the login URL with `wantsurl` = `start.return_to` validated again
///    against wwwroot (a URL that fails becomes wwwroot's front page).
pub(crate) async fn finish_login(
    sso: &SsoState,
    browser: &BrowserRequest,
    start: LoginStart,
    identity: Identity,
) -> Response<ProxyBody> {
    let provider = start.provider.as_str();
    if identity.provider != start.provider || identity.tenant != start.tenant {
        return login_failed(
            sso,
            browser,
            provider,
            FailureReason::State,
            "identity is for another provider or tenant than the login started with",
        );
    }
    if identity.user.is_empty() {
        return login_failed(
            sso,
            browser,
            provider,
            FailureReason::Protocol,
            "no user value",
        );
    }
    if let Some(p) = sso.provider(provider) {
        if let Err(why) = rules::check(&p.rules, &identity) {
            return login_failed(sso, browser, provider, FailureReason::RuleRefused, &why);
        }
    }
    let return_path = return_url::validate(&sso.wwwroot, &start.return_to)
        .unwrap_or_else(|| format!("{}/", sso.wwwroot.path));
    let login_url = match sso
        .handoff
        .request_login_url(
            &sso.http,
            &HandoffUser {
                user: &identity.user,
                firstname: identity.firstname.as_deref(),
                lastname: identity.lastname.as_deref(),
                email: identity.email.as_deref(),
                ip: browser.client_ip,
            },
        )
        .await
    {
        Ok(u) => u,
        Err(e) => {
            let shown = match &e {
                HandoffError::Moodle { message, .. } => message.clone(),
                _ => String::new(),
            };
            tracing::warn!(request_id = %browser.request_id, provider, error = %e, "sso: hand-off to Moodle failed");
            return login_failed(sso, browser, provider, FailureReason::Handoff, &shown);
        }
    };
    if let Some(old) = session::current(sso, browser).await {
        // A new id at every login: the old one must not stay usable.
        if let Err(e) = sso.sessions.end(&old.id).await {
            tracing::warn!(request_id = %browser.request_id, error = %e, "sso: old session not ended");
        }
    }
    let (id, _session) = match sso.sessions.create(&identity).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(request_id = %browser.request_id, error = %e, "sso: session not stored");
            return login_failed(sso, browser, provider, FailureReason::StoreUnavailable, "");
        }
    };
    sso.metrics.login_ok(provider, identity.tenant.as_deref());
    tracing::info!(
        request_id = %browser.request_id,
        provider,
        tenant = identity.tenant.as_deref().unwrap_or("-"),
        "sso: login handed to Moodle"
    );
    let target = sso.handoff.login_redirect(&login_url, &return_path);
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&target) {
        h.insert(LOCATION, v);
    }
    h.insert(
        SET_COOKIE,
        cookie::set(&id, browser.secure, sso.sessions.absolute().as_secs()),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
