//! SP-initiated login over HTTP-Redirect: an AuthnRequest with a fresh 128-bit ID, signed
//! when the SP has a key, remembered in the store so the Response must answer it.

use samael::traits::ToXml;

use super::pending;
use super::provider::SamlProvider;
use super::redirect_binding::{self, Kind};
use crate::sso::identity::LoginStart;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("the IdP metadata has not been read yet")]
    NoMetadata,
    #[error("cannot build the AuthnRequest: {0}")]
    Build(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// A message ID: `_` and 32 hex digits (an XML ID must not start with a digit).
pub(crate) fn new_id() -> String {
    format!("_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The URL to send the browser to and the Set-Cookie value that binds the request to this
/// browser; the request is remembered for `request_lifetime`.
pub(crate) async fn start(
    provider: &SamlProvider,
    store: &Store,
    start: LoginStart,
    secure: bool,
) -> Result<(String, String), LoginError> {
    let idp = provider.idp().ok_or(LoginError::NoMetadata)?;
    let sp = provider.service_provider(&idp, false);
    let mut request = sp
        .make_authentication_request(&idp.sso_redirect)
        .map_err(|e| LoginError::Build(e.to_string()))?;
    request.id = new_id();
    // The NameID comes as the IdP sends it; a policy we cannot know would only make it refuse.
    request.name_id_policy = None;
    let xml = request
        .to_string()
        .map_err(|e| LoginError::Build(e.to_string()))?;
    let query = redirect_binding::send_query(
        &xml,
        Kind::Request,
        None,
        provider.keys.as_ref().map(|k| &k.key),
    )
    .map_err(|e| LoginError::Build(e.to_string()))?;
    let binding = hex::encode(rand::random::<[u8; 32]>());
    let lifetime = provider.opts.request_lifetime.get();
    pending::remember_login(
        store,
        &request.id,
        &pending::PendingLogin {
            start,
            binding: crate::sso::flow_state::hash(&binding),
        },
        lifetime,
    )
    .await?;
    // The Response comes back as a cross-site POST from the IdP, which a SameSite=Lax cookie
    // would miss: None (which needs Secure) over TLS. Plain HTTP (tests, same site) sets none.
    let cookie = format!(
        "{}={binding}; Path=/; HttpOnly; Max-Age={}{}",
        pending::binding_cookie(secure, &request.id),
        lifetime.as_secs(),
        if secure {
            "; Secure; SameSite=None"
        } else {
            ""
        }
    );
    let sep = if idp.sso_redirect.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok((format!("{}{sep}{query}", idp.sso_redirect), cookie))
}
