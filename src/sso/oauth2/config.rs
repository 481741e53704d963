//! The keys of a `kind: oauth2` provider (plain OAuth 2, no OpenID Connect: no discovery, no ID
//! token). The shared keys (`client_id`, `client_secret_file`, `client_auth`, `scopes`,
//! `user_claim`, the profile claims) sit flat on the provider as for OIDC; the endpoints and
//! the subject field sit under its `oauth2:` map. Their checks are `sso::provider_check`.

use serde::Deserialize;

/// `sso.providers[i].oauth2`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Options {
    /// Where the browser is sent to sign in and consent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged for an access token.
    pub token_endpoint: String,
    /// The JSON document about the person, fetched with the access token (GitHub: `/user`).
    pub userinfo_endpoint: String,
    /// The field that names the person for good (logout, logs): GitHub's `id`, else `sub`.
    #[serde(default = "default_subject")]
    pub subject_field: String,
    /// Send a PKCE S256 challenge (on unless the provider refuses one).
    #[serde(default = "yes")]
    pub pkce: bool,
}

fn default_subject() -> String {
    "sub".into()
}
fn yes() -> bool {
    true
}
