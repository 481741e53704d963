//! The keys of a `kind: oauth2` provider (plain OAuth 2, no OpenID Connect: no discovery, no ID
//! token). The shared keys (`client_id`, `client_secret_file`, `client_auth`, `scopes`,
//! `user_claim`, the profile claims) sit flat on the provider as for OIDC; the endpoints and
//! the subject field sit under its `oauth2:` map.

use serde::Deserialize;

use crate::sso::config::ProviderConfig;

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

/// A URL key must be http(s).
fn url_key(key: &str, name: &str, value: &str, err: &mut dyn FnMut(String, String)) {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => err(
            format!("{key}.oauth2.{name}"),
            format!("{value:?} is not an http(s) URL"),
        ),
    }
}

/// The config checks of an oauth2 provider (`moodle-edge check` and start-up).
pub(crate) fn check(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
    let Some(o) = &p.oauth2 else {
        err(
            format!("{key}.oauth2"),
            "is required for an oauth2 provider (authorization_endpoint, token_endpoint, userinfo_endpoint)".into(),
        );
        return;
    };
    url_key(
        key,
        "authorization_endpoint",
        &o.authorization_endpoint,
        err,
    );
    url_key(key, "token_endpoint", &o.token_endpoint, err);
    url_key(key, "userinfo_endpoint", &o.userinfo_endpoint, err);
    if o.subject_field.is_empty() {
        err(
            format!("{key}.oauth2.subject_field"),
            "must not be empty".into(),
        );
    }
    for (name, present) in [
        ("client_id", p.client_id.is_some()),
        ("user_claim", p.user_claim.is_some()),
    ] {
        if !present {
            err(
                format!("{key}.{name}"),
                "is required for an oauth2 provider".into(),
            );
        }
    }
    crate::sso::config::check_client_auth(key, p, err);
    if p.issuer.is_some() {
        err(
            format!("{key}.issuer"),
            "an oauth2 provider has no issuer (use kind: oidc for OpenID Connect)".into(),
        );
    }
}
