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
    /// The login page's look for the site (a tenant may set its own).
    #[serde(default)]
    pub page: PageConfig,
    /// The local-account bypass (`/login/index.php?local=1` goes to Moodle's own form).
    #[serde(default)]
    pub local_login: LocalLoginConfig,
    /// Moodle's session cookie (`MoodleSession` + `$CFG->sessioncookie`): removed from the
    /// browser when its edge session ends.
    #[serde(default = "default_moodle_cookie")]
    pub moodle_session_cookie: String,
}

/// How a login page looks: name, logo and colours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// The heading, per language (`en` is the fallback).
    #[serde(default)]
    pub name: BTreeMap<String, String>,
    /// An image URL for the logo (same-site path or https URL).
    #[serde(default)]
    pub logo_url: Option<String>,
    /// Button and heading colour, `#rrggbb`.
    #[serde(default)]
    pub primary_colour: Option<String>,
    /// Page background colour, `#rrggbb`.
    #[serde(default)]
    pub background_colour: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLoginConfig {
    /// Whether the bypass exists at all (a tenant may switch it off for itself).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The site's setting applies to every tenant; tenants cannot override it.
    #[serde(default)]
    pub force: bool,
}

impl Default for LocalLoginConfig {
    fn default() -> Self {
        LocalLoginConfig {
            enabled: true,
            force: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_moodle_cookie() -> String {
    "MoodleSession".into()
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
    /// Send firstname, lastname and email from the claims. The plugin accepts them only when its
    /// "Create user" or "Update user" setting is on and refuses the whole call otherwise.
    #[serde(default)]
    pub send_profile: bool,
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
    /// Plain OAuth 2 (no OpenID Connect): endpoints and userinfo under `oauth2:`.
    #[serde(rename = "oauth2")]
    OAuth2,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    #[default]
    All,
    Only,
    Except,
}

/// One identity provider. OIDC and SAML share one shape; `provider_check` says which keys each
/// needs.
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
    /// The client's private key (PEM: RSA, or P-256 in PKCS#8) for `client_auth:
    /// private_key_jwt`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The `kid` of that key as registered at the provider (optional).
    #[serde(default)]
    pub client_key_id: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Also ask the userinfo endpoint for claims (merged over the ID token's).
    #[serde(default)]
    pub userinfo: bool,
    /// ID-token signature algorithms accepted (never `none`; HS* only if listed).
    #[serde(default = "default_algs")]
    pub id_token_algs: Vec<String>,
    /// Clock difference tolerated on exp/iat (and SAML NotBefore/NotOnOrAfter).
    #[serde(default = "default_skew")]
    pub clock_skew: Duration,
    /// Claims (or attributes) that fill Moodle's profile fields at the hand-off.
    #[serde(default = "default_firstname")]
    pub firstname_claim: String,
    #[serde(default = "default_lastname")]
    pub lastname_claim: String,
    #[serde(default = "default_email")]
    pub email_claim: String,
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
    /// Plain OAuth 2 endpoints and field mapping (see `sso::oauth2::config`).
    #[serde(default)]
    pub oauth2: Option<crate::sso::oauth2::config::OAuth2Options>,
    /// SAML keys beyond the contract's (see `sso::saml::config`).
    #[serde(default)]
    pub saml: Option<crate::sso::saml::config::SamlOptions>,
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
    /// This tenant's login page look (unset parts come from `sso.page`).
    #[serde(default)]
    pub page: PageConfig,
    /// Switches the local-account bypass on or off for this tenant (unless the site forces).
    #[serde(default)]
    pub local_login: Option<bool>,
}

/// Token-endpoint client authentication (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with `client_key_file` (RFC 7523): no shared secret.
    PrivateKeyJwt,
}

fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "PS256".into()]
}
fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_firstname() -> String {
    "given_name".into()
}
fn default_lastname() -> String {
    "family_name".into()
}
fn default_email() -> String {
    "email".into()
}
fn default_idle() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_absolute() -> Duration {
    Duration::from_secs(12 * 3600)
}
