//! Plain OAuth 2 providers (no OpenID Connect), as Moodle's own OAuth 2 services allow for
//! GitHub and the like. Phase order of a login:
//!
//! 1. `flow::start`: the authorization code flow with a fresh state and, where the provider
//!    takes one, a PKCE S256 challenge, kept and bound to the browser by `flow_state` (the
//!    same rules as OIDC);
//! 2. `flow::callback` (`GET /auth/oauth2/callback`): the state taken once for this browser,
//!    the code exchanged at the token endpoint;
//! 3. `userinfo`: the configured userinfo endpoint asked with the access token, its fields
//!    mapped (`user_claim`, `oauth2.subject_field`, the profile claims);
//! 4. `finish_login`, as every protocol.
//!
//! There is no ID token, so nothing is verified by signature: the identity is what the
//! provider's userinfo endpoint says over a connection the edge opened itself, with a token the
//! edge got for a code only this browser's flow could redeem.

pub(crate) mod config;
pub(crate) mod flow;
pub(crate) mod userinfo;

use std::collections::BTreeMap;

use openidconnect::{AuthUrl, ClientId, TokenUrl};
use thiserror::Error;

use crate::sso::client_auth::ClientCredentials;
use crate::sso::config::{ProviderConfig, ProviderKind, SsoConfig};
use config::OAuth2Options;

#[derive(Debug, Error)]
pub enum OAuth2ConfigError {
    #[error("sso.providers[{index}].{key}: {message}")]
    Key {
        index: usize,
        key: &'static str,
        message: String,
    },
}

/// One plain OAuth 2 provider at run time.
pub(crate) struct OAuth2Provider {
    /// The config as written (claims, scopes, rules ...).
    pub cfg: ProviderConfig,
    /// Its `oauth2:` map (endpoints, subject field, PKCE).
    pub opts: OAuth2Options,
    pub auth_url: AuthUrl,
    pub token_url: TokenUrl,
    pub userinfo_url: url::Url,
    pub client_id: ClientId,
    /// The secret or the private key, read at build time; never logged.
    pub credentials: ClientCredentials,
}

impl OAuth2Provider {
    fn build(index: usize, cfg: &ProviderConfig) -> Result<OAuth2Provider, OAuth2ConfigError> {
        let err = |key: &'static str, message: String| OAuth2ConfigError::Key {
            index,
            key,
            message,
        };
        let opts = cfg
            .oauth2
            .clone()
            .ok_or_else(|| err("oauth2", "is required for an oauth2 provider".into()))?;
        let auth_url = AuthUrl::new(opts.authorization_endpoint.clone()).map_err(|e| {
            err(
                "oauth2.authorization_endpoint",
                format!("{:?}: {e}", opts.authorization_endpoint),
            )
        })?;
        let token_url = TokenUrl::new(opts.token_endpoint.clone()).map_err(|e| {
            err(
                "oauth2.token_endpoint",
                format!("{:?}: {e}", opts.token_endpoint),
            )
        })?;
        let userinfo_url = url::Url::parse(&opts.userinfo_endpoint).map_err(|e| {
            err(
                "oauth2.userinfo_endpoint",
                format!("{:?}: {e}", opts.userinfo_endpoint),
            )
        })?;
        let credentials = ClientCredentials::load(cfg).map_err(|(key, m)| err(key, m))?;
        Ok(OAuth2Provider {
            cfg: cfg.clone(),
            opts,
            auth_url,
            token_url,
            userinfo_url,
            client_id: ClientId::new(cfg.client_id.clone().unwrap_or_default()),
            credentials,
        })
    }
}

/// Every `kind: oauth2` provider, by id.
#[derive(Default)]
pub(crate) struct OAuth2Providers {
    by_id: BTreeMap<String, OAuth2Provider>,
}

impl OAuth2Providers {
    pub(crate) fn build(cfg: &SsoConfig) -> Result<OAuth2Providers, OAuth2ConfigError> {
        let mut by_id = BTreeMap::new();
        for (i, p) in cfg.providers.iter().enumerate() {
            if p.kind == ProviderKind::OAuth2 {
                by_id.insert(p.id.clone(), OAuth2Provider::build(i, p)?);
            }
        }
        Ok(OAuth2Providers { by_id })
    }

    pub(crate) fn get(&self, id: &str) -> Option<&OAuth2Provider> {
        self.by_id.get(id)
    }
}
