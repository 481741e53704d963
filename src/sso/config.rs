//! `sso:` — OpenID Connect and SAML providers, tenants, sessions and the Moodle hand-off.
//! Parsed and validated now so a site can keep one config across releases; the login flow
//! itself is the single sign-on issue's work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::units::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// Requests for these paths are sent to the edge login page instead of Moodle.
    #[serde(default)]
    pub intercept: Vec<String>,
    #[serde(default)]
    pub session: SessionConfig,
    pub moodle_handoff: MoodleHandoffConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    #[serde(default = "default_idle")]
    pub idle_timeout: Duration,
    #[serde(default = "default_absolute")]
    pub absolute_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: default_idle(),
            absolute_timeout: default_absolute(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoodleHandoffConfig {
    /// The auth_userkey web-service token; when absent, MOODLE_EDGE_USERKEY_TOKEN.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub mapping_field: MappingField,
    #[serde(default)]
    pub send_client_ip: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingField {
    #[default]
    Username,
    Email,
    Idnumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Oidc,
    Saml,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    #[default]
    All,
    Only,
    Except,
}

/// One identity provider. OIDC and SAML share one shape; `check` says which keys each needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub label: BTreeMap<String, String>,
    #[serde(default)]
    pub availability: Availability,
    #[serde(default)]
    pub tenants: Vec<String>,
    // OIDC
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub user_claim: Option<String>,
    // SAML
    #[serde(default)]
    pub idp_metadata_file: Option<PathBuf>,
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    #[serde(default)]
    pub sp_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub sp_key_file: Option<PathBuf>,
    #[serde(default)]
    pub user_attribute: Option<String>,
    /// Rules the identity must meet before the hand-off (all must hold).
    #[serde(default)]
    pub rules: Vec<crate::sso::rules::Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// Host names of this tenant (empty: any host, then `path_prefix` decides).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A path prefix of this tenant (e.g. `/acme/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

fn default_idle() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_absolute() -> Duration {
    Duration::from_secs(12 * 3600)
}
