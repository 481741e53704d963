//! The authenticate stage: single sign-on at the edge (OpenID Connect, SAML 2.0, per-tenant
//! providers, the Moodle hand-off). The `sso:` section is parsed and validated today so a site
//! keeps one config across releases; until the SSO stage lands, requests — including those on
//! the `/auth/*` paths — go to Moodle unchanged, and the proxy says so at start-up.

pub mod config;

use http::request;
use http::Response;

use crate::body::ProxyBody;
use crate::pipeline::RequestContext;
use crate::state::State;

/// Answers the request here when single sign-on applies to it; None lets it go on to Moodle.
pub fn authenticate(
    state: &State,
    _ctx: &RequestContext,
    _parts: &request::Parts,
) -> Option<Response<ProxyBody>> {
    let _ = state.config.sso.as_ref()?;
    None
}
