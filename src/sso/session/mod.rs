//! Edge sessions: who is signed in on this browser, for which tenant, through which provider.
//!
//! Phase order: `cookie` reads the id from the request -> `store` finds the session (one
//! local lookup with the memory store: no round trip to Moodle) and enforces the idle and
//! absolute lifetimes -> the caller checks the tenant. A login always makes a new id
//! (`create`), so an id planted before login is worthless after it. Logout messages find
//! sessions through the protocol handle index (`end_sessions`).

mod cache;
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
    pub session: std::sync::Arc<Session>,
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

/// Whether the edge session named by these request headers is alive: None when there is no
/// edge cookie at all (the common case: one header scan). What every request to Moodle pays.
pub(crate) async fn cookie_session_alive(
    sessions: &Sessions,
    headers: &http::HeaderMap,
    secure: bool,
) -> Option<Result<bool, SessionError>> {
    let raw = super::browser::cookie_value(headers, cookie::name(secure))?;
    let Some(id) = SessionId::parse(raw) else {
        return Some(Ok(false));
    };
    if sessions.fresh_copy(&id).is_some() {
        return Some(Ok(true));
    }
    // Boxed: a store call's future is large, and every request's future would carry its size.
    Some(Box::pin(sessions.get(&id)).await.map(|s| s.is_some()))
}

/// The OIDC `sid` of every probe login, so `end_logins` names them all.
const PROBE_SID: &str = "f3a1c2d4-e5b6-4789-9abc-def012345678";

/// The per-request session check on its own, for `benches/sso_session.rs`: a memory (or
/// Redis) store with one live session like a real OIDC login's.
pub struct SessionProbe {
    sessions: Sessions,
}

impl SessionProbe {
    pub fn memory() -> SessionProbe {
        SessionProbe {
            sessions: Sessions::new(
                crate::store::Store::Memory(crate::store::MemoryStore::new(100_000)),
                std::time::Duration::from_secs(7200),
                std::time::Duration::from_secs(43200),
            ),
        }
    }

    /// The same check against Redis at `url` (a server the bench started), with this replica
    /// cache TTL ("0s": every check is a round trip). Call inside a tokio runtime.
    pub fn redis(url: &str, cache_ttl: std::time::Duration) -> Result<SessionProbe, String> {
        use crate::store::config::{StoreBackend, StoreConfig};
        let mut cfg = StoreConfig {
            backend: StoreBackend::Redis,
            redis_url: url.to_string(),
            redis_key_prefix: "moodle-edge-bench:".into(),
            ..StoreConfig::default()
        };
        cfg.session_cache.ttl = crate::config::units::Duration(cache_ttl);
        let metrics = std::sync::Arc::new(
            crate::store::metrics::StoreMetrics::unregistered().map_err(|e| e.to_string())?,
        );
        let store =
            crate::store::Store::build_with(&cfg, metrics.clone()).map_err(|e| e.to_string())?;
        Ok(SessionProbe {
            sessions: Sessions::new(
                store,
                std::time::Duration::from_secs(7200),
                std::time::Duration::from_secs(43200),
            )
            .with_cache(&cfg.session_cache, metrics),
        })
    }

    /// Logs someone in; the request headers (a browser's usual cookies plus the edge's).
    pub async fn login(&self) -> http::HeaderMap {
        let identity = super::identity::Identity {
            provider: "campus".into(),
            tenant: None,
            user: "student42".into(),
            firstname: Some("Given".into()),
            lastname: Some("Family".into()),
            email: Some("student42@example.edu".into()),
            attributes: Default::default(),
            handle: super::identity::ProtocolHandle::Oidc {
                sub: "0b7e1f2a-5c3d-4e6f-8a9b-0c1d2e3f4a5b".into(),
                sid: Some(PROBE_SID.into()),
                // A typical RS256 ID token's length.
                id_token: "x".repeat(900),
            },
        };
        let mut headers = http::HeaderMap::new();
        if let Ok((id, _)) = self.sessions.create(&identity).await {
            let cookie = format!(
                "MoodleSession=abcdef0123456789abcdef0123; MOODLEID1_=%25; {}={}; moodle-edge-sso-last=campus",
                cookie::name(true),
                id.as_str()
            );
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                headers.insert(http::header::COOKIE, v);
            }
        }
        headers
    }

    /// The check a proxied request gets: true when the session is alive.
    pub async fn check(&self, headers: &http::HeaderMap) -> bool {
        matches!(
            cookie_session_alive(&self.sessions, headers, true).await,
            Some(Ok(true))
        )
    }

    /// Ends every session of the probe's `sid`, as a back-channel logout does; how many were
    /// alive, or the store's error.
    pub async fn end_logins(&self) -> Result<usize, String> {
        self.sessions
            .end_by_handle("campus", super::identity::HandleRef::OidcSid(PROBE_SID))
            .await
            .map_err(|e| e.to_string())
    }
}
