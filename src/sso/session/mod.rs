//! Edge sessions: who is signed in on this browser, for which tenant, through which provider.
//!
//! Phase order: `cookie` reads the id from the request -> `store` finds the session (one
//! local lookup with the memory store: no round trip to Moodle) and enforces the idle and
//! absolute lifetimes -> the caller checks the tenant. A login always makes a new id
//! (`create`), so an id planted before login is worthless after it. Logout messages find
//! sessions through the protocol handle index (`end_sessions`).

pub(crate) mod cookie;
mod record;
mod store;

pub(crate) use record::{Session, SessionId};
pub(crate) use store::{SessionError, Sessions};

use super::browser::BrowserRequest;
use super::identity::HandleRef;
use super::SsoState;

/// A valid session of this browser for the tenant of this request.
#[derive(Debug, Clone)]
pub(crate) struct CurrentSession {
    pub id: SessionId,
    pub session: Session,
}

/// The browser's session if it has one that is alive and was made on this request's tenant.
/// A session from another tenant is treated as absent (it is not ended: it stays valid there).
pub(crate) async fn current(sso: &SsoState, browser: &BrowserRequest) -> Option<CurrentSession> {
    let raw = browser.cookie(cookie::name(browser.secure))?;
    let id = SessionId::parse(raw)?;
    match sso.sessions.get(&id).await {
        Ok(Some(session)) if session.tenant.as_deref() == browser.tenant_id() => {
            Some(CurrentSession { id, session })
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(request_id = %browser.request_id, error = %e, "sso: session store failed");
            None
        }
    }
}

/// Ends every session of `provider` that `handle` names (SAML LogoutRequest, OIDC back-channel
/// logout); returns how many were alive. With a shared store this ends them on every replica.
pub(crate) async fn end_sessions(
    sso: &SsoState,
    provider: &str,
    handle: HandleRef<'_>,
) -> Result<usize, SessionError> {
    let n = sso.sessions.end_by_handle(provider, handle).await?;
    sso.metrics.sessions_ended_by_protocol(provider, n);
    Ok(n)
}
