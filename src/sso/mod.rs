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

// Until the stage shape lands on main and the stage is wired into the pipeline, the handlers
// are reached from tests only.
#![allow(dead_code)]

pub(crate) mod browser;
pub mod config;
pub(crate) mod failure;
pub(crate) mod finish;
pub(crate) mod handoff;
pub(crate) mod html;
pub(crate) mod identity;
pub mod metrics;
pub(crate) mod outbound;
pub(crate) mod return_url;
pub mod rules;
pub(crate) mod saml;
pub(crate) mod session;
pub(crate) mod tenant;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::context::RequestContext;
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;
use crate::store::Store;

use config::{ProviderConfig, SsoConfig};
use handoff::{Handoff, HandoffConfigError};
use metrics::SsoMetrics;
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
    ) -> Result<SsoState, SsoBuildError> {
        let wwwroot = Wwwroot::parse(wwwroot).map_err(SsoBuildError::Wwwroot)?;
        Ok(SsoState {
            tenants: Tenants::build(sso),
            sessions: Sessions::new(
                store.clone(),
                sso.session.idle_timeout.get(),
                sso.session.absolute_timeout.get(),
            ),
            handoff: Handoff::build(&sso.moodle_handoff, upstream_url, &wwwroot)?,
            http: outbound::HttpClient::new(CONTROL_CALL_TIMEOUT)?,
            saml: SamlProviders::build(sso)?,
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

/// The authenticate stage.
pub struct SsoStage;

impl Stage for SsoStage {
    const NAME: &'static str = "authenticate";

    async fn run(state: &Arc<State>, _ctx: &mut RequestContext, _req: &mut StageRequest) -> Flow {
        let _ = state.sso.as_ref();
        Flow::Next
    }
}
