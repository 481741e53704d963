//! The authenticate stage: single sign-on at the edge.
//!
//! Phase order for a request on an SSO path (`route::SsoRoute`):
//! 1. `browser`: the request as SSO handlers see it (tenant resolved by `tenant`).
//! 2. `session`: the browser's edge session, if any (no round trip to Moodle).
//! 3. a handler: `login_page` (the per-tenant page and the provider choice), a protocol
//!    (`oidc`, `saml`), or `logout`.
//! 4. `finish`: every verified login goes `rules` -> `handoff` (auth_userkey) -> new
//!    session -> redirect to the `return_url` validated against wwwroot.
//!
//! Protocol modules produce an `identity::Identity` and call `finish::finish_login`; logout
//! messages end sessions through `session::end_sessions`.

pub(crate) mod browser;
pub(crate) mod claims;
pub(crate) mod client_auth;
pub(crate) mod config;
pub(crate) mod failure;
pub(crate) mod finish;
pub(crate) mod flow_state;
pub(crate) mod handoff;
pub(crate) mod html;
pub(crate) mod identity;
pub(crate) mod language;
pub(crate) mod login_page;
pub(crate) mod logout;
pub(crate) mod metrics;
pub(crate) mod oauth2;
pub(crate) mod oidc;
pub(crate) mod outbound;
pub(crate) mod page_look;
pub(crate) mod provider_check;
pub(crate) mod return_url;
pub(crate) mod return_watch;
pub(crate) mod rules;
pub(crate) mod saml;
pub(crate) mod session;
pub(crate) mod stage;
pub(crate) mod tenant;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::store::config::{FaultPolicy, StoreConfig};
use crate::store::metrics::StoreMetrics;
use crate::store::Store;

use config::{ProviderConfig, SsoConfig};
use handoff::{Handoff, HandoffConfigError};
use metrics::SsoMetrics;
use oidc::{OidcConfigError, OidcProviders};
use return_url::Wwwroot;
use saml::{SamlBuildError, SamlProviders};
use session::Sessions;
use tenant::Tenants;

/// How long the edge waits for a provider or Moodle's web service on a control call.
const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SsoBuildError {
    #[error("moodle.wwwroot: {0}")]
    Wwwroot(String),
    #[error(transparent)]
    Handoff(#[from] HandoffConfigError),
    #[error("sso: TLS client: {0}")]
    Tls(#[from] rustls::Error),
    #[error("sso: {0}")]
    Saml(#[from] SamlBuildError),
    #[error(transparent)]
    Oidc(#[from] OidcConfigError),
    #[error(transparent)]
    OAuth2(#[from] oauth2::OAuth2ConfigError),
}

/// Everything single sign-on needs, built once per config (a reload builds a new one).
pub struct SsoState {
    /// The `sso:` section as written.
    pub(crate) config: SsoConfig,
    /// Where return URLs must stay, and what the hand-off's login URL must start with.
    pub(crate) wwwroot: Wwwroot,
    pub(crate) tenants: Tenants,
    pub(crate) sessions: Sessions,
    pub(crate) handoff: Handoff,
    /// Control calls to providers and to Moodle's web service.
    pub(crate) http: outbound::HttpClient,
    /// The store for flow state (OIDC state, SAML request IDs, replay caches).
    pub(crate) store: Store,
    /// What a request does while the store fails (`store.on_error`).
    pub(crate) store_policy: FaultPolicy,
    /// Counts the policy's fallbacks.
    pub(crate) store_metrics: Arc<StoreMetrics>,
    pub(crate) oidc: OidcProviders,
    /// Plain OAuth 2 providers (userinfo instead of an ID token).
    pub(crate) oauth2: oauth2::OAuth2Providers,
    /// The SAML providers' built state (metadata, keys): read by `saml` (branch wip/saml).
    #[allow(dead_code)]
    pub(crate) saml: SamlProviders,
    pub(crate) metrics: Arc<SsoMetrics>,
}

impl SsoState {
    pub fn build(
        sso: &SsoConfig,
        wwwroot: &str,
        upstream_url: &str,
        store: Store,
        metrics: Arc<SsoMetrics>,
        store_use: (&StoreConfig, Arc<StoreMetrics>),
    ) -> Result<SsoState, SsoBuildError> {
        let (store_cfg, store_metrics) = store_use;
        let wwwroot = Wwwroot::parse(wwwroot).map_err(SsoBuildError::Wwwroot)?;
        Ok(SsoState {
            tenants: Tenants::build(sso),
            sessions: Sessions::new(
                store.clone(),
                sso.session.idle_timeout.get(),
                sso.session.absolute_timeout.get(),
            )
            .with_cache(&store_cfg.session_cache, store_metrics.clone()),
            store_policy: store_cfg.on_error,
            store_metrics,
            handoff: Handoff::build(&sso.moodle_handoff, upstream_url, &wwwroot)?,
            http: outbound::HttpClient::new(CONTROL_CALL_TIMEOUT)?,
            oidc: OidcProviders::build(sso)?,
            oauth2: oauth2::OAuth2Providers::build(sso)?,
            saml: SamlProviders::build(sso, &wwwroot.prefix)?,
            store,
            metrics,
            wwwroot,
            config: sso.clone(),
        })
    }

    /// A provider's config by id.
    pub(crate) fn provider(&self, id: &str) -> Option<&ProviderConfig> {
        self.config.providers.iter().find(|p| p.id == id)
    }
}
