//! The authenticate stage: single sign-on at the edge (OpenID Connect, SAML 2.0, per-tenant
//! providers, the Moodle hand-off). The `sso:` section is parsed and validated today so a site
//! keeps one config across releases; until the SSO stage lands, requests — including those on
//! the `/auth/*` paths — go to Moodle unchanged, and the proxy says so at start-up.

pub mod config;

use std::sync::Arc;

use crate::context::RequestContext;
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;

/// The authenticate stage.
pub struct SsoStage;

impl Stage for SsoStage {
    const NAME: &'static str = "authenticate";

    async fn run(state: &Arc<State>, _ctx: &mut RequestContext, _req: &mut StageRequest) -> Flow {
        let _ = state.config.sso.as_ref();
        Flow::Next
    }
}
