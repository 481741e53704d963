//! Sessions in the shared `store`: one record per session under the hash of its id, and one
//! index entry per protocol handle listing the sessions it names (for logout messages).
//!
//! Lifetimes: each record's store TTL is what is left of the shorter of the idle and the
//! absolute lifetime, and both are checked again on read (a store may keep an entry a little
//! past its TTL). The idle clock is refreshed at most once per `REFRESH_EVERY`, so a busy
//! session is not rewritten on every request.
//!
//! `get` asks a `SessionCache` of decoded records first (every write puts its record there
//! too), so a proxied request with a live session decodes nothing: with the memory store the
//! copy is local truth kept for `REFRESH_EVERY`; with Redis it is this replica's short-lived
//! copy (`store.session_cache.ttl`) in front of a round trip. Every end of a
//! session (logout here, a back-channel or SAML logout, a new login replacing it) deletes the
//! record and publishes its key on `ENDED_CHANNEL`; each replica's `watch_ended` task drops its
//! copy. Background tasks hold only a weak token and stop when the sessions are dropped (a
//! reload builds new ones).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;

use crate::sso::identity::{HandleRef, Identity};
use crate::store::config::SessionCacheConfig;
use crate::store::metrics::StoreMetrics;
use crate::store::{Store, StoreError};

use super::cache::SessionCache;
use super::record::{Session, SessionId};

/// Where ended sessions' store keys are published (under `store.redis_key_prefix`).
const ENDED_CHANNEL: &str = "sso:ended";

/// How often the active-sessions gauge is counted.
const COUNT_EVERY: Duration = Duration::from_secs(15);

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
    /// Decoded copies of the records read or written here, so a check decodes nothing (None
    /// only with Redis and `store.session_cache.ttl: 0s`).
    cache: Option<SessionCache>,
    /// Cache hits and misses, the active-sessions gauge.
    metrics: Option<Arc<StoreMetrics>>,
    /// Alive while these sessions are in use; the background tasks stop once it is gone.
    alive: Arc<()>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sessions {
    pub(crate) fn new(store: Store, idle: Duration, absolute: Duration) -> Sessions {
        let cache = decoded_copies(&store, &SessionCacheConfig::default());
        Sessions {
            store,
            idle,
            absolute,
            cache,
            metrics: None,
            alive: Arc::new(()),
        }
    }

    /// Adds the per-replica cache (Redis only) and the metrics, and, inside a runtime, starts
    /// the tasks that drop ended sessions from the cache and count the active sessions.
    pub(crate) fn with_cache(
        mut self,
        cfg: &SessionCacheConfig,
        metrics: Arc<StoreMetrics>,
    ) -> Sessions {
        let shared = matches!(self.store, Store::Redis(_));
        self.cache = decoded_copies(&self.store, cfg);
        self.metrics = Some(metrics.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if let (true, Some(cache)) = (shared, &self.cache) {
                rt.spawn(watch_ended(self.store.clone(), cache.clone()));
            }
            rt.spawn(count_active(
                self.store.clone(),
                metrics,
                Arc::downgrade(&self.alive),
            ));
        }
        self
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
        let session = self.write(&id, session, now).await?;
        for r in session.handle.refs() {
            self.index_add(&r.index_key(&session.provider), &id.store_key())
                .await?;
        }
        Ok((id, Session::clone(&session)))
    }

    /// A decoded copy that answers at once: alive, with no idle refresh due. None: ask `get`.
    /// What nearly every checked request gets, without a future to hold a store call.
    pub(crate) fn fresh_copy(&self, id: &SessionId) -> Option<Arc<Session>> {
        let session = self.cache.as_ref()?.get(&id.store_key())?;
        let now = now_secs();
        if self.expired(&session, now) || now.saturating_sub(session.last_seen) >= REFRESH_EVERY {
            return None;
        }
        if let (Some(m), Store::Redis(_)) = (&self.metrics, &self.store) {
            m.cache(true);
        }
        Some(session)
    }

    /// The session if it is alive; refreshes its idle clock when due. A decoded copy read or
    /// written here lately answers without decoding (with Redis: without a round trip, and
    /// while Redis fails).
    pub(crate) async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, SessionError> {
        let key = id.store_key();
        if let Some(cache) = &self.cache {
            let cached = cache.get(&key);
            if let (Some(m), Store::Redis(_)) = (&self.metrics, &self.store) {
                m.cache(cached.is_some());
            }
            if let Some(session) = cached {
                return self.serve_cached(id, &key, cache, session).await;
            }
        }
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let mut session: Session = serde_json::from_slice(&bytes)?;
        let now = now_secs();
        if self.expired(&session, now) {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        if now.saturating_sub(session.last_seen) >= REFRESH_EVERY {
            session.last_seen = now;
            return Ok(Some(self.write(id, session, now).await?));
        }
        let session = Arc::new(session);
        if let Some(cache) = &self.cache {
            cache.put(&key, session.clone());
        }
        Ok(Some(session))
    }

    /// A cached copy: its lifetimes are checked like a read's; a due idle refresh is written
    /// through, and a failed write does not refuse the request (the copy is still good).
    async fn serve_cached(
        &self,
        id: &SessionId,
        key: &str,
        cache: &SessionCache,
        session: Arc<Session>,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        let now = now_secs();
        if self.expired(&session, now) {
            cache.forget(key);
            return Ok(None);
        }
        if now.saturating_sub(session.last_seen) < REFRESH_EVERY {
            return Ok(Some(session));
        }
        let mut fresh = Session::clone(&session);
        fresh.last_seen = now;
        match self.write(id, fresh, now).await {
            Ok(fresh) => Ok(Some(fresh)),
            Err(e) => {
                tracing::debug!(error = %e, "sso: idle refresh of a cached session failed");
                Ok(Some(session))
            }
        }
    }

    /// Ends one session (logout at the edge).
    pub(crate) async fn end(&self, id: &SessionId) -> Result<(), SessionError> {
        self.end_key(&id.store_key()).await
    }

    /// Deletes the record, drops this replica's copy and tells the others to drop theirs.
    async fn end_key(&self, key: &str) -> Result<(), SessionError> {
        if let Some(cache) = &self.cache {
            cache.forget(key);
        }
        self.store.delete(key).await?;
        if matches!(self.store, Store::Redis(_)) && self.cache.is_some() {
            // After the delete: a replica that re-reads on the message finds nothing.
            if let Err(e) = self.store.publish(ENDED_CHANNEL, key.as_bytes()).await {
                tracing::warn!(error = %e, "sso: logout not published; other replicas drop the session within store.session_cache.ttl");
            }
        }
        Ok(())
    }

    /// Ends every session the handle names; returns how many were still alive.
    pub(crate) async fn end_by_handle(
        &self,
        provider: &str,
        handle: HandleRef<'_>,
    ) -> Result<usize, SessionError> {
        let handle_key = handle.index_key(provider);
        let index = index_store_key(&handle_key);
        let mut keys = self.store.members(&index).await?;
        // Sessions a replica of the build before the set indexed (a JSON list under the old
        // key) are still ended during a rolling upgrade.
        let legacy = legacy_index_store_key(&handle_key);
        if let Some(bytes) = self.store.get(&legacy).await? {
            keys.extend(serde_json::from_slice::<Vec<String>>(&bytes).unwrap_or_default());
        }
        let mut alive = 0;
        for key in &keys {
            if self.store.get(key).await?.is_some() {
                alive += 1;
            }
            // Ended even when gone here: another replica may still hold a copy.
            self.end_key(key).await?;
        }
        self.store.members_remove(&index, &keys).await?;
        self.store.delete(&legacy).await?;
        Ok(alive)
    }

    fn expired(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.created) >= self.absolute.as_secs()
            || now.saturating_sub(s.last_seen) >= self.idle.as_secs()
    }

    /// Stores the record and keeps its decoded copy.
    async fn write(
        &self,
        id: &SessionId,
        s: Session,
        now: u64,
    ) -> Result<Arc<Session>, SessionError> {
        let absolute_left = (s.created + self.absolute.as_secs()).saturating_sub(now);
        let idle_left = (s.last_seen + self.idle.as_secs()).saturating_sub(now);
        let ttl = Duration::from_secs(absolute_left.min(idle_left).max(1));
        let key = id.store_key();
        self.store.set(&key, &serde_json::to_vec(&s)?, ttl).await?;
        let s = Arc::new(s);
        if let Some(cache) = &self.cache {
            cache.put(&key, s.clone());
        }
        Ok(s)
    }

    /// Adds a session key to the set of those a handle names: one atomic add, so two logins
    /// of one handle at the same instant (on one replica or two) are both ended by its logout.
    async fn index_add(&self, handle_key: &str, session_key: &str) -> Result<(), SessionError> {
        let key = index_store_key(handle_key);
        self.store
            .members_add(&key, session_key, self.absolute)
            .await?;
        // A handle names few sessions; drop those that are gone so the set stays short.
        let mut gone = Vec::new();
        for k in self.store.members(&key).await? {
            if k != session_key && self.store.get(&k).await?.is_none() {
                gone.push(k);
            }
        }
        self.store.members_remove(&key, &gone).await?;
        Ok(())
    }
}

/// The decoded copies a store's sessions get. The memory store is this process's alone, so its
/// copies never go stale (the lifetimes are checked on every read of a copy as of a record);
/// Redis's are this replica's, kept for `store.session_cache.ttl` (none with `0s`).
fn decoded_copies(store: &Store, cfg: &SessionCacheConfig) -> Option<SessionCache> {
    let ttl = match store {
        Store::Memory(_) => Duration::from_secs(REFRESH_EVERY),
        Store::Redis(_) => cfg.ttl.get(),
    };
    (!ttl.is_zero()).then(|| SessionCache::new(ttl, cfg.max_entries))
}

/// Drops ended sessions from this replica's cache as other replicas (and this one) publish
/// them; after a pub/sub reconnection (messages may have been missed) or a lag, drops all.
/// Ends when the store's hub is gone (the store was dropped by a reload).
async fn watch_ended(store: Store, cache: SessionCache) {
    let mut ended = store.subscribe(ENDED_CHANNEL);
    let mut epochs = store.epochs();
    // The store itself is not kept: the hub's channel closing is the signal to stop.
    drop(store);
    loop {
        tokio::select! {
            m = ended.recv() => match m {
                Ok(key) => cache.forget(&String::from_utf8_lossy(&key)),
                Err(RecvError::Lagged(_)) => cache.forget_all(),
                Err(RecvError::Closed) => return,
            },
            changed = epochs.changed() => {
                if changed.is_err() {
                    return;
                }
                cache.forget_all();
            }
        }
    }
}

/// Counts the sessions in the store for the gauge every `COUNT_EVERY` while `alive` lasts.
async fn count_active(store: Store, metrics: Arc<StoreMetrics>, alive: Weak<()>) {
    let mut tick = tokio::time::interval(COUNT_EVERY);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        match store.count_prefix("sso:s:").await {
            Ok(n) => metrics.set_active_sessions(n),
            Err(e) => tracing::debug!(error = %e, "sso: active sessions not counted"),
        }
    }
}

/// Handle keys hold provider-chosen text: hashed so any value makes a safe store key.
fn index_store_key(handle_key: &str) -> String {
    format!("sso:hs:{}", handle_digest(handle_key))
}

/// Where builds before the set kept a handle's sessions, as one JSON list (read-modify-write,
/// which could lose an entry to a concurrent login): only read and deleted now.
fn legacy_index_store_key(handle_key: &str) -> String {
    format!("sso:h:{}", handle_digest(handle_key))
}

fn handle_digest(handle_key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(handle_key.as_bytes()))
}

#[cfg(test)]
mod tests;
