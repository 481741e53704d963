//! RP-initiated logout: after the edge ended a session of an OIDC login, the browser goes to
//! the provider's end-session endpoint with `id_token_hint`, and comes back to
//! `post_logout_redirect_uri` (the edge's logged-out page).

use openidconnect::core::CoreIdToken;
use openidconnect::{LogoutRequest, PostLogoutRedirectUrl};

use super::provider::OidcProvider;
use crate::sso::outbound::HttpClient;

/// The provider's end-session URL for this ID token, or None when it has none.
pub(crate) async fn end_session_url(
    http: &HttpClient,
    provider: &OidcProvider,
    id_token: &str,
    after: &str,
) -> Option<String> {
    let meta = provider.metadata(http).await.ok()?;
    let endpoint = meta.additional_metadata().end_session_endpoint.clone()?;
    let mut req = LogoutRequest::from(endpoint).set_client_id(provider.client_id.clone());
    if let Ok(token) = id_token.parse::<CoreIdToken>() {
        req = req.set_id_token_hint(&token);
    }
    if let Ok(after) = PostLogoutRedirectUrl::new(after.to_string()) {
        req = req.set_post_logout_redirect_uri(after);
    }
    Some(req.http_get_url().to_string())
}
