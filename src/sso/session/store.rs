//! Sessions in the shared `store`: one record per session under the hash of its id, and one
//! index entry per protocol handle listing the sessions it names (for logout messages).
//!
//! Lifetimes: each record's store TTL is what is left of the shorter of the idle and the
//! absolute lifetime, and both are checked again on read (a store may keep an entry a little
//! past its TTL). The idle clock is refreshed at most once per `REFRESH_EVERY`, so a busy
//! session is not rewritten on every request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use thiserror::Error;

use crate::sso::identity::{HandleRef, Identity};
use crate::store::{Store, StoreError};

use super::record::{Session, SessionId};

/// How stale `last_seen` may get before a request rewrites it: the idle timeout is enforced
/// to within this much.
const REFRESH_EVERY: u64 = 60;

#[derive(Debug, Error)]
pub(crate) enum SessionError {
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("session record: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// The session store with the configured lifetimes.
#[derive(Clone)]
pub(crate) struct Sessions {
    store: Store,
    idle: Duration,
    absolute: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sessions {
    pub(crate) fn new(store: Store, idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            store,
            idle,
            absolute,
        }
    }

    /// The absolute lifetime, also the cookie's Max-Age.
    pub(crate) fn absolute(&self) -> Duration {
        self.absolute
    }

    /// Makes a new session (always a fresh id) for a verified identity.
    pub(crate) async fn create(
        &self,
        identity: &Identity,
    ) -> Result<(SessionId, Session), SessionError> {
        let now = now_secs();
        let mut csrf = [0u8; 32];
        rand::rng().fill_bytes(&mut csrf);
        let session = Session {
            tenant: identity.tenant.clone(),
            provider: identity.provider.clone(),
            user: identity.user.clone(),
            firstname: identity.firstname.clone(),
            lastname: identity.lastname.clone(),
            email: identity.email.clone(),
            handle: identity.handle.clone(),
            csrf: hex::encode(csrf),
            created: now,
            last_seen: now,
        };
        let id = SessionId::new();
        self.write(&id, &session, now).await?;
        for r in session.handle.refs() {
            self.index_add(&r.index_key(&session.provider), &id.store_key())
                .await?;
        }
        Ok((id, session))
    }

    /// The session if it is alive; refreshes its idle clock when due.
    pub(crate) async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let Some(bytes) = self.store.get(&id.store_key()).await? else {
            return Ok(None);
        };
        let mut session: Session = serde_json::from_slice(&bytes)?;
        let now = now_secs();
        if self.expired(&session, now) {
            self.store.delete(&id.store_key()).await?;
            return Ok(None);
        }
        if now.saturating_sub(session.last_seen) >= REFRESH_EVERY {
            session.last_seen = now;
            self.write(id, &session, now).await?;
        }
        Ok(Some(session))
    }

    /// Ends one session (logout at the edge).
    pub(crate) async fn end(&self, id: &SessionId) -> Result<(), SessionError> {
        self.store.delete(&id.store_key()).await?;
        Ok(())
    }

    /// Ends every session the handle names; returns how many were still alive.
    pub(crate) async fn end_by_handle(
        &self,
        provider: &str,
        handle: HandleRef<'_>,
    ) -> Result<usize, SessionError> {
        let index = index_store_key(&handle.index_key(provider));
        let Some(bytes) = self.store.get(&index).await? else {
            return Ok(0);
        };
        let keys: Vec<String> = serde_json::from_slice(&bytes)?;
        let mut alive = 0;
        for key in &keys {
            if self.store.get(key).await?.is_some() {
                alive += 1;
                self.store.delete(key).await?;
            }
        }
        self.store.delete(&index).await?;
        Ok(alive)
    }

    fn expired(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.created) >= self.absolute.as_secs()
            || now.saturating_sub(s.last_seen) >= self.idle.as_secs()
    }

    async fn write(&self, id: &SessionId, s: &Session, now: u64) -> Result<(), SessionError> {
        let absolute_left = (s.created + self.absolute.as_secs()).saturating_sub(now);
        let idle_left = (s.last_seen + self.idle.as_secs()).saturating_sub(now);
        let ttl = Duration::from_secs(absolute_left.min(idle_left).max(1));
        self.store
            .set(&id.store_key(), &serde_json::to_vec(s)?, ttl)
            .await?;
        Ok(())
    }

    /// Adds a session key to a handle's list. Read-modify-write: two logins of one handle at
    /// the same instant may keep only one entry; the other session then simply ends by its
    /// own lifetime rather than by the logout message.
    async fn index_add(&self, handle_key: &str, session_key: &str) -> Result<(), SessionError> {
        let key = index_store_key(handle_key);
        let mut keys: Vec<String> = match self.store.get(&key).await? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Vec::new(),
        };
        keys.push(session_key.to_string());
        // A handle names few sessions; drop those that are gone so the list stays short.
        let mut live = Vec::with_capacity(keys.len());
        for k in keys {
            if k == session_key || self.store.get(&k).await?.is_some() {
                live.push(k);
            }
        }
        self.store
            .set(&key, &serde_json::to_vec(&live)?, self.absolute)
            .await?;
        Ok(())
    }
}

/// Handle keys hold provider-chosen text: hashed so any value makes a safe store key.
fn index_store_key(handle_key: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "sso:h:{}",
        hex::encode(Sha256::digest(handle_key.as_bytes()))
    )
}

#[cfg(test)]
mod tests;
