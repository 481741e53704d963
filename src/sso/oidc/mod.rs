//! OpenID Connect relying party (the `openidconnect` crate): `provider` (discovery, JWKS cache),
//! `flow` (code flow with PKCE, callback, ID-token checks), `backchannel` (logout tokens),
//! `logout` (RP-initiated logout at the provider's end-session endpoint).

pub(crate) mod backchannel;
pub(crate) mod flow;
pub(crate) mod http_adapter;
pub(crate) mod logout;
pub(crate) mod provider;

use std::collections::BTreeMap;

use crate::sso::config::{ProviderKind, SsoConfig};

pub(crate) use provider::OidcConfigError;
use provider::OidcProvider;

/// Every `kind: oidc` provider, by id.
#[derive(Default)]
pub(crate) struct OidcProviders {
    by_id: BTreeMap<String, OidcProvider>,
}

impl OidcProviders {
    pub(crate) fn build(cfg: &SsoConfig) -> Result<OidcProviders, OidcConfigError> {
        let mut by_id = BTreeMap::new();
        for (i, p) in cfg.providers.iter().enumerate() {
            if p.kind == ProviderKind::Oidc {
                by_id.insert(p.id.clone(), OidcProvider::build(i, p)?);
            }
        }
        Ok(OidcProviders { by_id })
    }

    pub(crate) fn get(&self, id: &str) -> Option<&OidcProvider> {
        self.by_id.get(id)
    }

    /// The provider whose issuer is exactly `iss`.
    pub(crate) fn by_issuer(&self, iss: &str) -> Option<&OidcProvider> {
        self.by_id.values().find(|p| p.issuer.as_str() == iss)
    }
}
