//! OpenID Connect Back-Channel Logout 1.0: the provider POSTs a signed logout token; the edge
//! ends every session of its `sid` (or, without one, its `sub`). The crate has no type for
//! logout tokens, so the checks are written here (docs/sso.md says why), with the signature
//! verified by the crate's own JWK code:
//! alg on the allow-list -> key by `kid` (JWKS refetched once, rate-limited) -> signature ->
//! iss, aud, iat (+ skew), exp if present -> the back-channel event -> no nonce -> sid or sub
//! -> `jti` seen once (in the store, so once across replicas).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::JsonWebKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::flow::payload_claims;
use super::provider::{parse_alg, OidcProvider};
use crate::body::{self, ProxyBody};
use crate::sso::browser::BrowserRequest;
use crate::sso::identity::HandleRef;
use crate::sso::session::end_sessions;
use crate::sso::SsoState;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be; its jti is remembered at least this long.
const MAX_AGE: Duration = Duration::from_secs(300);

/// POST /auth/oidc/backchannel-logout.
pub(crate) async fn handle(
    sso: &SsoState,
    browser: &BrowserRequest,
    body: Bytes,
) -> Response<ProxyBody> {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token else {
        return refuse(browser, "-", "no logout_token");
    };
    // Which provider: the one whose issuer the (not yet trusted) token names; everything is
    // then verified against that provider's keys and settings.
    let Some(claims) = payload_claims(&token) else {
        return refuse(browser, "-", "malformed token");
    };
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(provider) = sso.oidc.by_issuer(iss) else {
        return refuse(browser, "-", "unknown issuer");
    };
    let id = provider.cfg.id.clone();
    if let Err(why) = verify_signature(sso, provider, &token).await {
        return refuse(browser, &id, &why);
    }
    if let Err(why) = check_claims(provider, &claims) {
        return refuse(browser, &id, &why);
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let jti_key = format!(
        "sso:oidc:jti:{}",
        hex::encode(Sha256::digest(format!("{id}\0{jti}").as_bytes()))
    );
    match sso
        .store
        .set_if_absent(&jti_key, b"1", MAX_AGE + provider.skew * 2)
        .await
    {
        Ok(true) => {}
        Ok(false) => return refuse(browser, &id, "jti replayed"),
        Err(e) => {
            tracing::error!(request_id = %browser.request_id, error = %e, "sso: jti store failed");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
    }
    let handle = match (
        claims.get("sid").and_then(Value::as_str),
        claims.get("sub").and_then(Value::as_str),
    ) {
        (Some(sid), _) => HandleRef::OidcSid(sid),
        (None, Some(sub)) => HandleRef::OidcSub(sub),
        (None, None) => return refuse(browser, &id, "neither sid nor sub"),
    };
    match end_sessions(sso, &id, handle).await {
        Ok(n) => {
            sso.metrics.logout(&id, "backchannel", n);
            tracing::info!(request_id = %browser.request_id, provider = %id, sessions = n, "sso: back-channel logout");
            answer(StatusCode::OK, "")
        }
        Err(e) => {
            tracing::error!(request_id = %browser.request_id, error = %e, "sso: back-channel logout failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
        }
    }
}

fn refuse(browser: &BrowserRequest, provider: &str, why: &str) -> Response<ProxyBody> {
    tracing::warn!(request_id = %browser.request_id, provider, reason = why, "sso: back-channel logout token refused");
    answer(StatusCode::BAD_REQUEST, "invalid_request")
}

/// The spec's answers: 200 empty, or 400 with an OAuth error; never cached.
fn answer(status: StatusCode, error: &str) -> Response<ProxyBody> {
    let body = if error.is_empty() {
        body::empty()
    } else {
        body::full(serde_json::json!({ "error": error }).to_string())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !error.is_empty() {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

async fn verify_signature(
    sso: &SsoState,
    provider: &OidcProvider,
    token: &str,
) -> Result<(), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a signed JWT".into());
    };
    let header: Map<String, Value> = b64(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("unreadable header")?;
    let alg_text = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let alg = parse_alg(alg_text).ok_or_else(|| format!("alg {alg_text:?} not allowed"))?;
    if !provider.algs.contains(&alg) {
        return Err(format!("alg {alg_text:?} not allowed"));
    }
    let signature = b64(s).ok_or("unreadable signature")?;
    let kid = header.get("kid").and_then(Value::as_str);
    let message = format!("{h}.{p}");
    let jwks = provider.jwks(&sso.http).await.map_err(|e| e.to_string())?;
    let verified = try_keys(&jwks, kid, &alg, message.as_bytes(), &signature);
    match verified {
        Some(r) => r,
        None if provider.refetch_jwks(&sso.http).await => {
            let jwks = provider.jwks(&sso.http).await.map_err(|e| e.to_string())?;
            try_keys(&jwks, kid, &alg, message.as_bytes(), &signature)
                .unwrap_or(Err("no key for kid".into()))
        }
        None => Err("no key for kid".into()),
    }
}

/// None when no key matches the kid (the caller may refetch); otherwise the verification.
fn try_keys(
    jwks: &CoreJsonWebKeySet,
    kid: Option<&str>,
    alg: &CoreJwsSigningAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Option<Result<(), String>> {
    let keys: Vec<&CoreJsonWebKey> = jwks
        .keys()
        .iter()
        .filter(|k| match (kid, k.key_id()) {
            (Some(want), Some(have)) => have.as_str() == want,
            (None, _) => true,
            (Some(_), None) => false,
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    let ok = keys
        .iter()
        .any(|k| k.verify_signature(alg, message, signature).is_ok());
    Some(if ok {
        Ok(())
    } else {
        Err("bad signature".into())
    })
}

fn check_claims(provider: &OidcProvider, c: &Map<String, Value>) -> Result<(), String> {
    if c.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err("iss".into());
    }
    let client_id = provider.client_id.as_str();
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud".into());
    }
    let now = chrono::Utc::now().timestamp();
    let skew = provider.skew.as_secs() as i64;
    let iat = c.get("iat").and_then(Value::as_i64).ok_or("no iat")?;
    if iat > now + skew || iat < now - MAX_AGE.as_secs() as i64 - skew {
        return Err("iat out of range".into());
    }
    if let Some(exp) = c.get("exp") {
        if exp.as_i64().is_none_or(|e| e < now - skew) {
            return Err("expired".into());
        }
    }
    let event_ok = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err("no back-channel logout event".into());
    }
    if c.contains_key("nonce") {
        return Err("nonce present".into());
    }
    if c.get("jti")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("no jti".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::config::ProviderConfig;

    fn provider() -> (OidcProvider, tempfile::NamedTempFile) {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "s3cret").unwrap();
        let cfg: ProviderConfig = serde_saphyr::from_str(&format!(
            "{{id: campus, kind: oidc, issuer: 'https://op.example', client_id: edge, client_secret_file: '{}', user_claim: sub}}",
            secret.path().display()
        ))
        .unwrap();
        (OidcProvider::build(0, &cfg).unwrap(), secret)
    }

    fn good() -> Map<String, Value> {
        let now = chrono::Utc::now().timestamp();
        match serde_json::json!({
            "iss": "https://op.example", "aud": ["edge"], "iat": now, "exp": now + 120,
            "jti": "j1", "sid": "s1", "events": { EVENT: {} }
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_well_formed_logout_token_passes() {
        let (p, _f) = provider();
        assert_eq!(check_claims(&p, &good()), Ok(()));
    }

    #[test]
    fn each_required_property_is_enforced() {
        let (p, _f) = provider();
        let now = chrono::Utc::now().timestamp();
        type Spoil = Box<dyn Fn(&mut Map<String, Value>)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "iss",
                Box::new(|c| {
                    c.insert("iss".into(), "https://other".into());
                }),
            ),
            (
                "aud",
                Box::new(|c| {
                    c.insert("aud".into(), "someone-else".into());
                }),
            ),
            (
                "iat",
                Box::new(move |c| {
                    c.insert("iat".into(), (now + 3600).into());
                }),
            ),
            (
                "old",
                Box::new(move |c| {
                    c.insert("iat".into(), (now - 3600).into());
                }),
            ),
            (
                "exp",
                Box::new(move |c| {
                    c.insert("exp".into(), (now - 3600).into());
                }),
            ),
            (
                "events",
                Box::new(|c| {
                    c.remove("events");
                }),
            ),
            (
                "event",
                Box::new(|c| {
                    c.insert("events".into(), serde_json::json!({"x": {}}));
                }),
            ),
            (
                "nonce",
                Box::new(|c| {
                    c.insert("nonce".into(), "n".into());
                }),
            ),
            (
                "jti",
                Box::new(|c| {
                    c.remove("jti");
                }),
            ),
        ];
        for (what, spoil) in cases {
            let mut c = good();
            spoil(&mut c);
            assert!(check_claims(&p, &c).is_err(), "{what} not enforced");
        }
    }

    #[test]
    fn unknown_algorithms_and_none_are_not_parsed() {
        assert!(parse_alg("none").is_none());
        assert!(parse_alg("HS256").is_none());
        assert!(parse_alg("RS256").is_some());
    }
}
