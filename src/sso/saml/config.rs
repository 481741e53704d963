//! The SAML-only keys of a `kind: saml` provider. The contract's keys (`idp_metadata_file`,
//! `sp_entity_id`, `sp_cert_file`, `sp_key_file`, `user_attribute`) sit flat on the provider;
//! the keys this module adds sit under the provider's `saml:` map, so the shared provider
//! struct needs one field for all of them. Their checks are `sso::provider_check`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::units::Duration;

/// `sso.providers[i].saml`: everything beyond the contract's keys, each with a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlOptions {
    /// IdP metadata fetched over http(s) instead of read from `idp_metadata_file`.
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    /// How often the metadata (file or URL) is read again, so IdP key rollovers need no
    /// restart.
    #[serde(default = "default_refresh")]
    pub idp_metadata_refresh: Duration,
    /// When set, the metadata must carry an XML signature by this certificate (PEM); metadata
    /// fetched over the network is otherwise only as good as the transport.
    #[serde(default)]
    pub idp_metadata_signing_cert_file: Option<PathBuf>,
    /// Which entity to use when the metadata is an aggregate (`EntitiesDescriptor`).
    #[serde(default)]
    pub idp_entity_id: Option<String>,
    /// Accept responses this proxy did not ask for (IdP-initiated login). Off: every response
    /// must answer an AuthnRequest this proxy sent.
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// Accept RSA-SHA1 signatures. Off: only the SHA-2 family is accepted.
    #[serde(default)]
    pub allow_sha1: bool,
    /// Refuse assertions that arrive unencrypted.
    #[serde(default)]
    pub require_encrypted_assertions: bool,
    /// Tolerance for the IdP's clock on NotBefore / NotOnOrAfter.
    #[serde(default = "default_skew")]
    pub max_clock_skew: Duration,
    /// How old a Response's IssueInstant may be when it arrives.
    #[serde(default = "default_response_age")]
    pub max_response_age: Duration,
    /// How long an AuthnRequest this proxy sent stays answerable.
    #[serde(default = "default_request_lifetime")]
    pub request_lifetime: Duration,
    /// Where to send the browser after a single logout that started here (a path on wwwroot).
    #[serde(default = "default_after_logout")]
    pub after_logout: String,
}

impl Default for SamlOptions {
    fn default() -> Self {
        SamlOptions {
            idp_metadata_url: None,
            idp_metadata_refresh: default_refresh(),
            idp_metadata_signing_cert_file: None,
            idp_entity_id: None,
            allow_idp_initiated: false,
            allow_sha1: false,
            require_encrypted_assertions: false,
            max_clock_skew: default_skew(),
            max_response_age: default_response_age(),
            request_lifetime: default_request_lifetime(),
            after_logout: default_after_logout(),
        }
    }
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}
fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_response_age() -> Duration {
    Duration::from_secs(180)
}
fn default_request_lifetime() -> Duration {
    Duration::from_secs(600)
}
fn default_after_logout() -> String {
    // The login page's "signed out" notice, as after every other logout.
    "/auth/login?logged_out=1".to_string()
}
