//! The authorization code flow with PKCE S256: `start` sends the browser to the provider with
//! a fresh state, nonce and code challenge, all kept server-side and bound to this browser by
//! a cookie; `callback` takes them back exactly once, exchanges the code, verifies the ID
//! token and hands the identity to `finish_login`.

use base64::Engine;
use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse,
};
use serde_json::{Map, Value};

use super::http_adapter::CrateHttp;
use super::provider::OidcProvider;
use crate::body::{self, ProxyBody};
use crate::sso::browser::BrowserRequest;
use crate::sso::client_auth::ASSERTION_TYPE;
use crate::sso::failure::{login_failed, FailureReason};
use crate::sso::finish::finish_login;
use crate::sso::flow_state::{self, FlowState, Protocol, FLOW_TTL};
use crate::sso::identity::{Identity, LoginStart, ProtocolHandle};
use crate::sso::SsoState;

/// The redirect URI for this browser: the host it came on, so the binding cookie comes back.
fn redirect_uri(browser: &BrowserRequest) -> String {
    let scheme = if browser.secure { "https" } else { "http" };
    format!("{scheme}://{}/auth/oidc/callback", browser.authority)
}

/// The person chose this OIDC provider: redirect to its authorization endpoint.
pub(crate) async fn start(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &OidcProvider,
    start: LoginStart,
) -> Response<ProxyBody> {
    let id = start.provider.clone();
    let meta = match provider.metadata(&sso.http).await {
        Ok(m) => m,
        Err(e) => return login_failed(sso, browser, &id, FailureReason::Provider, &e.to_string()),
    };
    let Ok(redirect) = RedirectUrl::new(redirect_uri(browser)) else {
        return login_failed(
            sso,
            browser,
            &id,
            FailureReason::Protocol,
            "bad redirect URI",
        );
    };
    let client = CoreClient::from_provider_metadata(
        meta,
        provider.client_id.clone(),
        provider.credentials.secret(),
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in provider.cfg.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    let cookie = match flow_state::begin(
        sso,
        browser,
        Protocol::Oidc,
        state.secret(),
        start,
        nonce.secret().clone(),
        verifier.secret().clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return login_failed(sso, browser, &id, FailureReason::StoreUnavailable, &e),
    };
    redirect_with_cookies(url.as_str(), &[cookie])
}

/// A 303 with the given Set-Cookie values, not cached.
pub(crate) fn redirect_with_cookies(location: &str, cookies: &[String]) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(SET_COOKIE, v);
        }
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// GET /auth/oidc/callback.
pub(crate) async fn callback(sso: &SsoState, browser: &BrowserRequest) -> Response<ProxyBody> {
    let (entry, clear, code) = match flow_state::take_callback(sso, browser, Protocol::Oidc).await {
        Ok(t) => t,
        Err((id, reason, detail)) => return login_failed(sso, browser, &id, reason, &detail),
    };
    let id = entry.start.provider.clone();
    let Some(provider) = sso.oidc.get(&id) else {
        return login_failed(
            sso,
            browser,
            &id,
            FailureReason::State,
            "provider no longer configured",
        );
    };
    let identity = match verify(sso, browser, provider, &entry, code).await {
        Ok(i) => i,
        Err((reason, detail)) => return login_failed(sso, browser, &id, reason, &detail),
    };
    let mut resp = finish_login(sso, browser, entry.start, identity).await;
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

type Refusal = (FailureReason, String);

/// Code exchange and ID-token verification; the identity it vouches for.
async fn verify(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &OidcProvider,
    entry: &FlowState,
    code: String,
) -> Result<Identity, Refusal> {
    let provider_err = |e: String| (FailureReason::Provider, e);
    let meta = provider
        .metadata(&sso.http)
        .await
        .map_err(|e| provider_err(e.to_string()))?;
    let redirect = RedirectUrl::new(redirect_uri(browser))
        .map_err(|e| (FailureReason::Protocol, e.to_string()))?;
    let token_endpoint = meta
        .token_endpoint()
        .map(|u| u.as_str().to_string())
        .unwrap_or_default();
    let client = CoreClient::from_provider_metadata(
        meta,
        provider.client_id.clone(),
        provider.credentials.secret(),
    )
    .set_redirect_uri(redirect)
    .set_auth_type(provider.credentials.auth_type());
    let mut req = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| provider_err(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(entry.pkce_verifier.clone()));
    if let Some(assertion) = provider
        .credentials
        .assertion(provider.client_id.as_str(), &token_endpoint)
    {
        let jwt = assertion.map_err(|e| provider_err(format!("client assertion: {e}")))?;
        req = req
            .add_extra_param("client_assertion_type", ASSERTION_TYPE)
            .add_extra_param("client_assertion", jwt);
    }
    let token = req
        .request_async(&CrateHttp(&sso.http))
        .await
        .map_err(|e| provider_err(format!("token endpoint: {e}")))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| (FailureReason::Protocol, "no id_token".to_string()))?
        .clone();
    let nonce = Nonce::new(entry.nonce.clone());
    let mut result = check_id_token(
        provider,
        &client_jwks(provider, sso).await?,
        &id_token,
        &nonce,
    );
    if matches!(
        result,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
        ))
    ) && provider.refetch_jwks(&sso.http).await
    {
        result = check_id_token(
            provider,
            &client_jwks(provider, sso).await?,
            &id_token,
            &nonce,
        );
    }
    result.map_err(refusal_for)?;
    let mut claims = payload_claims(&id_token.to_string()).ok_or_else(|| {
        (
            FailureReason::Protocol,
            "ID token payload unreadable".to_string(),
        )
    })?;
    if provider.cfg.userinfo {
        let info: Option<openidconnect::core::CoreUserInfoClaims> =
            match client.user_info(token.access_token().clone(), None) {
                Ok(req) => req.request_async(&CrateHttp(&sso.http)).await.ok(),
                Err(_) => None,
            };
        if let Some(Value::Object(map)) = info.and_then(|i| serde_json::to_value(i).ok()) {
            // userinfo's sub must be the ID token's (OIDC Core 5.3.2).
            if map.get("sub") != claims.get("sub") {
                return Err((FailureReason::Protocol, "userinfo sub differs".into()));
            }
            claims.extend(map);
        }
    }
    identity_from_claims(provider, &entry.start, &claims, id_token.to_string())
}

async fn client_jwks(
    provider: &OidcProvider,
    sso: &SsoState,
) -> Result<openidconnect::core::CoreJsonWebKeySet, Refusal> {
    provider
        .jwks(&sso.http)
        .await
        .map_err(|e| (FailureReason::Provider, e.to_string()))
}

/// Signature (allow-listed algorithms only), iss, aud, azp, exp and iat with the skew, nonce.
fn check_id_token(
    provider: &OidcProvider,
    jwks: &openidconnect::core::CoreJsonWebKeySet,
    id_token: &CoreIdToken,
    nonce: &Nonce,
) -> Result<(), ClaimsVerificationError> {
    let skew = chrono::Duration::from_std(provider.skew).unwrap_or(chrono::Duration::zero());
    let verifier = openidconnect::core::CoreIdTokenVerifier::new_public_client(
        provider.client_id.clone(),
        provider.issuer.clone(),
        jwks.clone(),
    )
    .set_allowed_algs(provider.algs.clone())
    // exp is compared with "now - skew": a token up to `skew` past exp still passes.
    .set_time_fn(move || chrono::Utc::now() - skew)
    .set_issue_time_verifier_fn(move |iat| {
        let now = chrono::Utc::now();
        if iat > now + skew {
            Err(format!("iat {iat} is in the future"))
        } else if iat < now - chrono::Duration::seconds(FLOW_TTL.as_secs() as i64) - skew {
            Err(format!("iat {iat} is too old"))
        } else {
            Ok(())
        }
    });
    id_token.claims(&verifier, nonce).map(|_| ())
}

fn refusal_for(e: ClaimsVerificationError) -> Refusal {
    let reason = match &e {
        ClaimsVerificationError::SignatureVerification(_) => FailureReason::BadSignature,
        ClaimsVerificationError::Expired(_) => FailureReason::Expired,
        ClaimsVerificationError::InvalidAudience(_) => FailureReason::Audience,
        ClaimsVerificationError::InvalidNonce(_) => FailureReason::Nonce,
        _ => FailureReason::Protocol,
    };
    (reason, e.to_string())
}

/// The JWT's payload as JSON. Read only after the crate verified the signature over it.
pub(crate) fn payload_claims(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn identity_from_claims(
    provider: &OidcProvider,
    start: &LoginStart,
    claims: &Map<String, Value>,
    id_token: String,
) -> Result<Identity, Refusal> {
    let first = |name: &str| {
        claims
            .get(name)
            .and_then(|v| crate::sso::claims::texts(v).into_iter().next())
    };
    let user_claim = provider.cfg.user_claim.as_deref().unwrap_or("sub");
    let user = first(user_claim).filter(|u| !u.is_empty()).ok_or_else(|| {
        // The usual cause: a provider (oidc-provider, Keycloak's defaults) that keeps
        // profile claims out of the ID token and serves them from userinfo only.
        let hint = if provider.cfg.userinfo {
            ""
        } else {
            " in the ID token (set userinfo: true if the provider serves it from userinfo)"
        };
        (
            FailureReason::Protocol,
            format!("no {user_claim} claim{hint}"),
        )
    })?;
    let sub = first("sub").ok_or_else(|| (FailureReason::Protocol, "no sub".to_string()))?;
    Ok(Identity {
        provider: start.provider.clone(),
        tenant: start.tenant.clone(),
        user,
        firstname: first(&provider.cfg.firstname_claim),
        lastname: first(&provider.cfg.lastname_claim),
        email: first(&provider.cfg.email_claim),
        attributes: claims
            .iter()
            .map(|(k, v)| (k.clone(), crate::sso::claims::texts(v)))
            .collect(),
        handle: ProtocolHandle::Oidc {
            sub,
            sid: first("sid"),
            id_token,
        },
    })
}
