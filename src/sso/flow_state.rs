//! The state of an authorization-code round trip (OpenID Connect and plain OAuth 2), shared by
//! both so they keep the same rules: `begin` stores the flow's secrets server-side under the
//! hash of a fresh `state` and binds them to this browser with a random cookie; `take` gets
//! them back **exactly once** (a replayed callback is refused even when two race) and only for
//! the browser that started the flow. Then the caller exchanges the code.

use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::browser::BrowserRequest;
use super::failure::FailureReason;
use super::identity::LoginStart;
use super::SsoState;

/// How long a person may take at the provider.
pub(crate) const FLOW_TTL: Duration = Duration::from_secs(600);

/// Which protocol a flow belongs to: its store keys and cookie names are its own, so a state
/// made for one callback is unknown at the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Oidc,
    OAuth2,
}

impl Protocol {
    fn tag(self) -> &'static str {
        match self {
            Protocol::Oidc => "oidc",
            Protocol::OAuth2 => "oauth2",
        }
    }
}

/// What `begin` keeps for the callback, under the hash of the state value.
#[derive(Serialize, Deserialize)]
pub(crate) struct FlowState {
    pub start: LoginStart,
    /// The OIDC nonce (empty for plain OAuth 2, which has no ID token).
    pub nonce: String,
    /// The PKCE verifier (empty when the provider is configured without PKCE).
    pub pkce_verifier: String,
    /// sha256 of the binding cookie's value: the callback must come from the same browser.
    binding: String,
}

pub(crate) fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn state_key(p: Protocol, state_hash: &str) -> String {
    format!("sso:{}:state:{state_hash}", p.tag())
}

/// The binding cookie's name: one per flow (a prefix of the state's hash), so two tabs that
/// start logins at once do not spoil each other's.
fn binding_cookie(p: Protocol, secure: bool, state_hash: &str) -> String {
    let short = &state_hash[..12.min(state_hash.len())];
    if secure {
        format!("__Host-moodle-edge-{}-{short}", p.tag())
    } else {
        format!("moodle-edge-{}-{short}", p.tag())
    }
}

/// Stores the flow under `state`; the Set-Cookie value that binds it to this browser.
pub(crate) async fn begin(
    sso: &SsoState,
    browser: &BrowserRequest,
    p: Protocol,
    state: &str,
    start: LoginStart,
    nonce: String,
    pkce_verifier: String,
) -> Result<String, String> {
    let binding = random_hex();
    let state_hash = hash(state);
    let entry = FlowState {
        start,
        nonce,
        pkce_verifier,
        binding: hash(&binding),
    };
    let value = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    sso.store
        .set(&state_key(p, &state_hash), &value, FLOW_TTL)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{}={binding}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        binding_cookie(p, browser.secure, &state_hash),
        FLOW_TTL.as_secs(),
        if browser.secure { "; Secure" } else { "" }
    ))
}

/// A refused callback: the provider id when known ("-" before), the reason and the detail.
pub(crate) type Refused = (String, FailureReason, String);

/// Takes the flow of `state` once, for this browser only. Returns it with the Set-Cookie value
/// that removes its binding cookie.
async fn take(
    sso: &SsoState,
    browser: &BrowserRequest,
    p: Protocol,
    state: &str,
) -> Result<(FlowState, String), Refused> {
    let unknown = || "-".to_string();
    let state_hash = hash(state);
    let key = state_key(p, &state_hash);
    let used_key = format!("sso:{}:used:{state_hash}", p.tag());
    let entry: FlowState = match sso.store.get(&key).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map_err(|_| (unknown(), FailureReason::State, "bad entry".to_string()))?,
        // A state that was taken before (its marker outlives the entry): a replayed callback,
        // so a replayed code is named as such.
        Ok(None) if matches!(sso.store.get(&used_key).await, Ok(Some(_))) => {
            return Err((unknown(), FailureReason::Replay, "state used twice".into()))
        }
        Ok(None) => {
            return Err((
                unknown(),
                FailureReason::State,
                "unknown or used state".into(),
            ))
        }
        Err(e) => return Err((unknown(), FailureReason::StoreUnavailable, e.to_string())),
    };
    let id = entry.start.provider.clone();
    // Exactly once, even for two callbacks racing (a replayed callback URL).
    match sso.store.set_if_absent(&used_key, b"1", FLOW_TTL).await {
        Ok(true) => {}
        Ok(false) => return Err((id, FailureReason::Replay, "state used twice".into())),
        Err(e) => return Err((id, FailureReason::StoreUnavailable, e.to_string())),
    }
    let _ = sso.store.delete(&key).await;
    let cookie_name = binding_cookie(p, browser.secure, &state_hash);
    let bound = browser
        .cookie(&cookie_name)
        .is_some_and(|v| hash(v) == entry.binding);
    if !bound {
        return Err((
            id,
            FailureReason::State,
            "state not bound to this browser".into(),
        ));
    }
    let clear = format!(
        "{cookie_name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if browser.secure { "; Secure" } else { "" }
    );
    Ok((entry, clear))
}

/// A callback's whole check, the same for every protocol: its parameters, then its flow taken
/// once for this browser. Returns the flow, the Set-Cookie value that clears its binding, and
/// the authorization code.
pub(crate) async fn take_callback(
    sso: &SsoState,
    browser: &BrowserRequest,
    p: Protocol,
) -> Result<(FlowState, String, String), Refused> {
    let (state, code) = callback_params(browser)?;
    let (entry, clear) = take(sso, browser, p, &state).await?;
    Ok((entry, clear, code))
}

/// The callback's `state` and `code`, or the refusal: the provider's own `error` (only its
/// code's safe characters reach the log), or a parameter missing.
fn callback_params(browser: &BrowserRequest) -> Result<(String, String), Refused> {
    if let Some(err) = browser.query_param("error") {
        let code: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(("-".into(), FailureReason::Provider, code));
    }
    match (browser.query_param("state"), browser.query_param("code")) {
        (Some(state), Some(code)) => Ok((state, code)),
        _ => Err(("-".into(), FailureReason::State, "no state or code".into())),
    }
}
