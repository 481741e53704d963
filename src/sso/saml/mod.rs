//! SAML 2.0 service provider: built on branch wip/saml. This file is the contract the SSO stage
//! calls; the SAML branch replaces the bodies (keep the signatures, or agree a change).
//!
//! Until then every SAML path answers 501, and building rejects no config.

use bytes::Bytes;
use http::{Response, StatusCode};
use thiserror::Error;

use crate::body::ProxyBody;
use crate::sso::browser::BrowserRequest;
use crate::sso::config::{ProviderConfig, SsoConfig};
use crate::sso::failure::simple_page;
use crate::sso::identity::LoginStart;
use crate::sso::session::Session;
use crate::sso::SsoState;

#[derive(Debug, Error)]
pub enum SamlBuildError {
    #[error("{key}: {message}")]
    Config { key: String, message: String },
}

/// Every SAML provider's built state (parsed IdP metadata, SP keys), made once per config.
#[derive(Default)]
pub(crate) struct SamlProviders {}

impl SamlProviders {
    /// Builds from the `kind: saml` providers; a config error names its key path.
    pub(crate) fn build(_cfg: &SsoConfig) -> Result<SamlProviders, SamlBuildError> {
        Ok(SamlProviders {})
    }
}

fn not_built(browser: &BrowserRequest) -> Response<ProxyBody> {
    simple_page(
        StatusCode::NOT_IMPLEMENTED,
        "SAML sign-in unavailable",
        "SAML sign-in is not available in this build.",
        &browser.request_id,
    )
}

/// The person chose this SAML provider on the login page: answer with the HTTP-Redirect
/// AuthnRequest, keeping `start` (for `finish_login`) under the request's ID in the store.
pub(crate) async fn start_login(
    _sso: &SsoState,
    browser: &BrowserRequest,
    _provider: &ProviderConfig,
    _start: LoginStart,
) -> Response<ProxyBody> {
    not_built(browser)
}

/// GET /auth/saml/metadata.
pub(crate) async fn metadata(_sso: &SsoState, browser: &BrowserRequest) -> Response<ProxyBody> {
    not_built(browser)
}

/// POST /auth/saml/acs: `body` is the whole form (the stage reads it, bounded). Verify, then
/// `crate::sso::finish::finish_login(sso, browser, start, identity)`; refusals through
/// `crate::sso::failure::login_failed`.
pub(crate) async fn acs(
    _sso: &SsoState,
    browser: &BrowserRequest,
    _body: Bytes,
) -> Response<ProxyBody> {
    not_built(browser)
}

/// GET|POST /auth/saml/slo: a LogoutRequest from the IdP (end sessions with
/// `crate::sso::session::end_sessions`, answer a LogoutResponse), or the IdP's LogoutResponse
/// to ours (then `crate::sso::logout::logged_out_page`).
pub(crate) async fn slo(
    _sso: &SsoState,
    browser: &BrowserRequest,
    _body: Bytes,
) -> Response<ProxyBody> {
    not_built(browser)
}

/// The edge session of a SAML login was just ended at the edge (POST /auth/logout or a logout
/// in Moodle): the redirect that sends a LogoutRequest to the IdP, or None when the IdP has no
/// SLO endpoint (the edge then shows its own logged-out page).
pub(crate) async fn logout_redirect(
    _sso: &SsoState,
    _browser: &BrowserRequest,
    _session: &Session,
) -> Option<Response<ProxyBody>> {
    None
}
