//! The requests this proxy sent and has not seen answered: AuthnRequests, with the login
//! page's `LoginStart` (so a Response must answer one of them: InResponseTo) and LogoutRequests (so a LogoutResponse must too). Kept in
//! the store, so any replica can take the answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sso::identity::LoginStart;
use crate::store::{Store, StoreError};

/// What a logout sent from here remembers until the IdP answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingLogout {
    pub provider: String,
    /// Where to send the browser once the IdP confirms (a path on wwwroot).
    pub return_to: String,
}

/// What an AuthnRequest sent from here remembers until its Response comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    pub start: LoginStart,
    /// sha256 of the binding cookie's value: only the browser that started this login may
    /// bring its Response (login CSRF).
    pub binding: String,
}

/// The binding cookie's name for a request: one per request (a prefix of the hash of its ID),
/// so two tabs logging in at once keep their own.
pub(crate) fn binding_cookie(secure: bool, request_id: &str) -> String {
    let h = crate::sso::flow_state::hash(request_id);
    if secure {
        format!("__Host-moodle-edge-saml-{}", &h[..12])
    } else {
        format!("moodle-edge-saml-{}", &h[..12])
    }
}

fn login_key(request_id: &str) -> String {
    format!("saml:authn:{request_id}")
}

fn logout_key(request_id: &str) -> String {
    format!("saml:logout:{request_id}")
}

pub(crate) async fn remember_login(
    store: &Store,
    request_id: &str,
    login: &PendingLogin,
    ttl: Duration,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(login).unwrap_or_default();
    store.set(&login_key(request_id), &value, ttl).await
}

/// The pending login this ID names, if any (unreadable entries count as none).
pub(crate) async fn find_login(
    store: &Store,
    request_id: &str,
) -> Result<Option<PendingLogin>, StoreError> {
    Ok(store
        .get(&login_key(request_id))
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Marks a login answered: the same request cannot be answered twice.
pub(crate) async fn forget_login(store: &Store, request_id: &str) -> Result<(), StoreError> {
    store.delete(&login_key(request_id)).await
}

pub(crate) async fn remember_logout(
    store: &Store,
    request_id: &str,
    logout: &PendingLogout,
    ttl: Duration,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(logout).unwrap_or_default();
    store.set(&logout_key(request_id), &value, ttl).await
}

/// Takes the pending logout this ID names (it is answered once).
pub(crate) async fn take_logout(
    store: &Store,
    request_id: &str,
) -> Result<Option<PendingLogout>, StoreError> {
    let key = logout_key(request_id);
    let found = store
        .get(&key)
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok());
    store.delete(&key).await?;
    Ok(found)
}
