//! SAML 2.0 service provider (samael with xmlsec underneath). The phases of a login:
//!
//! 1. `login`: an AuthnRequest over HTTP-Redirect, remembered in the store (`pending`);
//! 2. `acs`: the Response POSTed back is shape-checked (`response_shape`), verified by samael
//!    against the IdP's metadata key (`idp_metadata`, `signature_policy`), held to our own
//!    rules (audience, encryption), accepted once (`replay`) and read (`attributes`);
//! 3. `endpoints`: the identity goes to `sso::finish::finish_login` (the hand-off into Moodle).
//!
//! Logout both ways is `slo` (with `logout_message` and `redirect_binding`); the SP metadata
//! is `sp_metadata`; where the IdP metadata comes from is `metadata_source`, and `provider`
//! reads it again to keep it fresh. Nothing here logs a SAML message, only why one was refused.

pub(crate) mod config;

pub(crate) mod acs;
pub(crate) mod attributes;
mod endpoints;
pub(crate) mod idp_metadata;
pub(crate) mod login;
pub(crate) mod logout_message;
pub(crate) mod metadata_source;
pub(crate) mod pending;
pub(crate) mod provider;
pub(crate) mod redirect_binding;
pub(crate) mod replay;
pub(crate) mod response_shape;
pub(crate) mod signature_policy;
pub(crate) mod slo;
pub(crate) mod sp_keys;
pub(crate) mod sp_metadata;

#[cfg(test)]
mod tests;

use std::sync::Arc;

// Called by the SSO stage (src/sso/mod.rs) once it is wired into the pipeline.
#[allow(unused_imports)]
pub(crate) use endpoints::{acs, logout_redirect, metadata, slo, start_login};
pub(crate) use provider::SamlBuildError;
use provider::SamlProvider;

use crate::sso::config::{ProviderKind, SsoConfig};

/// Every SAML provider of the config, built.
#[derive(Debug, Default)]
pub(crate) struct SamlProviders {
    pub providers: Vec<Arc<SamlProvider>>,
}

impl SamlProviders {
    /// Builds the `kind: saml` providers of `sso` (keys are reported as `sso.providers[i]...`).
    pub(crate) fn build(sso: &SsoConfig, wwwroot: &str) -> Result<SamlProviders, SamlBuildError> {
        let providers = sso
            .providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == ProviderKind::Saml)
            .map(|(i, p)| SamlProvider::build(&format!("sso.providers[{i}]"), p, wwwroot))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SamlProviders { providers })
    }

    pub(crate) fn provider(&self, id: &str) -> Option<&Arc<SamlProvider>> {
        self.providers.iter().find(|p| p.id == id)
    }
}
