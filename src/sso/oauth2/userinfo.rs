//! The person behind an OAuth 2 access token: the provider's userinfo endpoint (GitHub's
//! `/user`, or any JSON document about the token's owner), its fields mapped to an identity.

use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use serde_json::{Map, Value};

use super::OAuth2Provider;
use crate::sso::claims;
use crate::sso::failure::FailureReason;
use crate::sso::identity::{Identity, LoginStart, ProtocolHandle};
use crate::sso::outbound::HttpClient;

type Refusal = (FailureReason, String);

/// GET the userinfo endpoint with the access token; its JSON object.
pub(crate) async fn fetch(
    http: &HttpClient,
    provider: &OAuth2Provider,
    access_token: &str,
) -> Result<Map<String, Value>, Refusal> {
    let provider_err = |m: String| (FailureReason::Provider, m);
    let req = http::Request::get(provider.userinfo_url.as_str())
        .header(AUTHORIZATION, format!("Bearer {access_token}"))
        .header(ACCEPT, "application/json")
        // GitHub refuses API calls without a User-Agent.
        .header(
            USER_AGENT,
            concat!("moodle-edge/", env!("CARGO_PKG_VERSION")),
        )
        .body(bytes::Bytes::new())
        .map_err(|e| provider_err(format!("userinfo request: {e}")))?;
    let resp = http
        .send(req)
        .await
        .map_err(|e| provider_err(format!("userinfo: {e}")))?;
    if !resp.status().is_success() {
        return Err(provider_err(format!(
            "userinfo answered {}",
            resp.status().as_u16()
        )));
    }
    match serde_json::from_slice(resp.body()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err((
            FailureReason::Protocol,
            "userinfo is not a JSON object".into(),
        )),
    }
}

/// The identity the userinfo document names: `user_claim` fills the hand-off's mapping field,
/// `oauth2.subject_field` names the person for good.
pub(crate) fn identity(
    provider: &OAuth2Provider,
    start: &LoginStart,
    doc: &Map<String, Value>,
) -> Result<Identity, Refusal> {
    let missing = |f: &str| (FailureReason::Protocol, format!("userinfo has no {f}"));
    let user_field = provider.cfg.user_claim.as_deref().unwrap_or("sub");
    let user = claims::first(doc, user_field).ok_or_else(|| missing(user_field))?;
    let subject = claims::first(doc, &provider.opts.subject_field)
        .ok_or_else(|| missing(&provider.opts.subject_field))?;
    Ok(Identity {
        provider: start.provider.clone(),
        tenant: start.tenant.clone(),
        user,
        firstname: claims::first(doc, &provider.cfg.firstname_claim),
        lastname: claims::first(doc, &provider.cfg.lastname_claim),
        email: claims::first(doc, &provider.cfg.email_claim),
        attributes: doc
            .iter()
            .map(|(k, v)| (k.clone(), claims::texts(v)))
            .collect(),
        handle: ProtocolHandle::OAuth2 { subject },
    })
}
