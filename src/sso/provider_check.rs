//! The config checks of one `sso.providers[i]` entry that depend on its `kind` (`moodle-edge
//! check` and start-up): which keys each kind needs and the shape of its own options. They sit
//! here, above `sso::config` and the per-kind option types, so those types import nothing
//! back. Each error names the key path (`key` is `sso.providers[i]`); reading the files and
//! the metadata happens when the state is built, and reports the same way.
//!
//! `check_kind` picks the kind's checks; each reports every problem it finds, not only the
//! first, so one `moodle-edge check` run lists them all.

use crate::sso::config::{ClientAuth, ProviderConfig, ProviderKind};

/// The checks of `p`'s kind.
pub(crate) fn check_kind(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
    match p.kind {
        ProviderKind::Oidc => oidc(key, p, err),
        ProviderKind::Saml => saml(key, p, err),
        ProviderKind::OAuth2 => oauth2(key, p, err),
    }
}

/// An OpenID Connect provider: discovery needs the issuer; the rest as for OAuth 2.
fn oidc(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
    for (name, present) in [
        ("issuer", p.issuer.is_some()),
        ("client_id", p.client_id.is_some()),
        ("user_claim", p.user_claim.is_some()),
    ] {
        if !present {
            err(
                format!("{key}.{name}"),
                format!("is required for a {:?} provider", p.kind),
            );
        }
    }
    client_auth(key, p, err);
}

/// The keys `client_auth` needs: a secret file, or with `private_key_jwt` a key file (and then
/// no secret, which would never be used).
fn client_auth(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
    match p.client_auth {
        ClientAuth::PrivateKeyJwt => {
            if p.client_key_file.is_none() {
                err(
                    format!("{key}.client_key_file"),
                    "is required with client_auth: private_key_jwt".into(),
                );
            }
            if p.client_secret_file.is_some() {
                err(
                    format!("{key}.client_secret_file"),
                    "is not used with client_auth: private_key_jwt (remove it)".into(),
                );
            }
        }
        ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => {
            if p.client_secret_file.is_none() {
                err(
                    format!("{key}.client_secret_file"),
                    format!("is required for a {:?} provider (or client_auth: private_key_jwt with client_key_file)", p.kind),
                );
            }
        }
    }
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

/// A plain OAuth 2 provider: its `oauth2:` endpoints, the shared keys, and no issuer.
fn oauth2(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
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
    client_auth(key, p, err);
    if p.issuer.is_some() {
        err(
            format!("{key}.issuer"),
            "an oauth2 provider has no issuer (use kind: oidc for OpenID Connect)".into(),
        );
    }
}

/// A SAML provider: where its metadata comes from, the attribute that names the person, the SP
/// keys, and the shape of its `saml:` options.
fn saml(key: &str, p: &ProviderConfig, err: &mut dyn FnMut(String, String)) {
    let opts = p.saml.clone().unwrap_or_default();
    match (&p.idp_metadata_file, &opts.idp_metadata_url) {
        (None, None) => err(
            format!("{key}.idp_metadata_file"),
            format!("is required for a saml provider (or set {key}.saml.idp_metadata_url)"),
        ),
        (Some(_), Some(_)) => err(
            format!("{key}.saml.idp_metadata_url"),
            "set either idp_metadata_file or saml.idp_metadata_url, not both".into(),
        ),
        _ => {}
    }
    if let Some(u) = &opts.idp_metadata_url {
        match url::Url::parse(u) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            _ => err(
                format!("{key}.saml.idp_metadata_url"),
                format!("{u:?} is not an http(s) URL"),
            ),
        }
    }
    if opts.idp_metadata_refresh.get() < std::time::Duration::from_secs(10) {
        err(
            format!("{key}.saml.idp_metadata_refresh"),
            "must be at least 10s".into(),
        );
    }
    if p.user_attribute.as_deref().unwrap_or("").is_empty() {
        err(
            format!("{key}.user_attribute"),
            "is required for a saml provider (the attribute that fills mapping_field, or NameID)"
                .into(),
        );
    }
    if p.sp_cert_file.is_some() != p.sp_key_file.is_some() {
        err(
            format!("{key}.sp_key_file"),
            "sp_cert_file and sp_key_file go together".into(),
        );
    }
    if opts.require_encrypted_assertions && p.sp_key_file.is_none() {
        err(
            format!("{key}.saml.require_encrypted_assertions"),
            "needs sp_key_file to decrypt with".into(),
        );
    }
    if let Some(id) = &p.sp_entity_id {
        if id.is_empty() {
            err(format!("{key}.sp_entity_id"), "must not be empty".into());
        }
    }
    if !opts.after_logout.starts_with('/')
        || opts.after_logout.starts_with("//")
        || opts.after_logout.contains('\\')
    {
        err(
            format!("{key}.saml.after_logout"),
            format!("{:?} must be a path on wwwroot", opts.after_logout),
        );
    }
}
