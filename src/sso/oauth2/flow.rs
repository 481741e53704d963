//! The plain OAuth 2 authorization code flow: `start` sends the browser to the provider with a
//! fresh state (and a PKCE S256 challenge unless `oauth2.pkce: false`), `callback` takes the
//! state back once for this browser (`flow_state`), exchanges the code and reads the person
//! from the userinfo endpoint.

use http::header::SET_COOKIE;
use http::{HeaderValue, Response};
use oauth2::basic::BasicClient;
use openidconnect::{
    AuthorizationCode, CsrfToken, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope,
};

use super::{userinfo, OAuth2Provider};
use crate::body::ProxyBody;
use crate::sso::browser::BrowserRequest;
use crate::sso::client_auth::ASSERTION_TYPE;
use crate::sso::failure::{login_failed, FailureReason};
use crate::sso::finish::finish_login;
use crate::sso::flow_state::{self, Protocol};
use crate::sso::identity::LoginStart;
use crate::sso::oidc::flow::redirect_with_cookies;
use crate::sso::oidc::http_adapter::CrateHttp;
use crate::sso::SsoState;

/// The redirect URI for this browser: the host it came on, so the binding cookie comes back.
fn redirect_uri(browser: &BrowserRequest) -> Option<RedirectUrl> {
    let scheme = if browser.secure { "https" } else { "http" };
    RedirectUrl::new(format!(
        "{scheme}://{}/auth/oauth2/callback",
        browser.authority
    ))
    .ok()
}

/// The person chose this provider: redirect to its authorization endpoint.
pub(crate) async fn start(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &OAuth2Provider,
    start: LoginStart,
) -> Response<ProxyBody> {
    let id = start.provider.clone();
    let Some(redirect) = redirect_uri(browser) else {
        return login_failed(
            sso,
            browser,
            &id,
            FailureReason::Protocol,
            "bad redirect URI",
        );
    };
    let client = BasicClient::new(provider.client_id.clone())
        .set_auth_uri(provider.auth_url.clone())
        .set_redirect_uri(redirect);
    let mut req = client.authorize_url(CsrfToken::new_random);
    for s in &provider.cfg.scopes {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let mut verifier = String::new();
    if provider.opts.pkce {
        let (challenge, v) = PkceCodeChallenge::new_random_sha256();
        req = req.set_pkce_challenge(challenge);
        verifier = v.secret().clone();
    }
    let (url, state) = req.url();
    match flow_state::begin(
        sso,
        browser,
        Protocol::OAuth2,
        state.secret(),
        start,
        String::new(),
        verifier,
    )
    .await
    {
        Ok(cookie) => redirect_with_cookies(url.as_str(), &[cookie]),
        Err(e) => login_failed(sso, browser, &id, FailureReason::StoreUnavailable, &e),
    }
}

/// GET /auth/oauth2/callback.
pub(crate) async fn callback(sso: &SsoState, browser: &BrowserRequest) -> Response<ProxyBody> {
    let (entry, clear, code) = match flow_state::take_callback(sso, browser, Protocol::OAuth2).await
    {
        Ok(t) => t,
        Err((id, reason, detail)) => return login_failed(sso, browser, &id, reason, &detail),
    };
    let id = entry.start.provider.clone();
    let Some(provider) = sso.oauth2.get(&id) else {
        return login_failed(
            sso,
            browser,
            &id,
            FailureReason::State,
            "provider no longer configured",
        );
    };
    let identity = match exchange(sso, browser, provider, &entry.pkce_verifier, code).await {
        Ok(doc) => userinfo::identity(provider, &entry.start, &doc),
        Err(r) => Err(r),
    };
    let mut resp = match identity {
        Ok(identity) => finish_login(sso, browser, entry.start, identity).await,
        Err((reason, detail)) => login_failed(sso, browser, &id, reason, &detail),
    };
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// The code for an access token, then the userinfo document.
async fn exchange(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &OAuth2Provider,
    pkce_verifier: &str,
    code: String,
) -> Result<serde_json::Map<String, serde_json::Value>, (FailureReason, String)> {
    let redirect = redirect_uri(browser)
        .ok_or_else(|| (FailureReason::Protocol, "bad redirect URI".to_string()))?;
    let mut client = BasicClient::new(provider.client_id.clone())
        .set_token_uri(provider.token_url.clone())
        .set_redirect_uri(redirect)
        .set_auth_type(provider.credentials.auth_type());
    if let Some(secret) = provider.credentials.secret() {
        client = client.set_client_secret(secret);
    }
    let mut req = client.exchange_code(AuthorizationCode::new(code));
    if !pkce_verifier.is_empty() {
        req = req.set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()));
    }
    if let Some(assertion) = provider
        .credentials
        .assertion(provider.client_id.as_str(), provider.token_url.as_str())
    {
        let jwt =
            assertion.map_err(|e| (FailureReason::Provider, format!("client assertion: {e}")))?;
        req = req
            .add_extra_param("client_assertion_type", ASSERTION_TYPE)
            .add_extra_param("client_assertion", jwt);
    }
    let token = req
        .request_async(&CrateHttp(&sso.http))
        .await
        .map_err(|e| (FailureReason::Provider, format!("token endpoint: {e}")))?;
    userinfo::fetch(&sso.http, provider, token.access_token().secret()).await
}
