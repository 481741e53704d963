//! This replica's short-lived copy of sessions it read from Redis (moka), so a proxied request
//! does not always pay a round trip, and so sessions already seen keep being served while
//! Redis fails.
//!
//! A logout anywhere publishes the session's store key; every replica's subscriber calls
//! `forget`, which removes the copy and remembers the key for one TTL (a tombstone): a read
//! from Redis that raced the logout cannot put the ended session back. The TTL bounds how long
//! a missed message could keep a session alive; a reconnected subscriber calls `forget_all`.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::record::Session;

#[derive(Clone)]
pub(crate) struct SessionCache {
    /// Store key -> session as last read or written here.
    live: Cache<String, Arc<Session>>,
    /// Store keys ended lately (by a logout seen here or published by another replica).
    ended: Cache<String, ()>,
}

impl SessionCache {
    pub(crate) fn new(ttl: Duration, max_entries: u64) -> SessionCache {
        SessionCache {
            live: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            ended: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Session>> {
        self.live.get(key)
    }

    /// Keeps a copy, unless the session was ended meanwhile.
    pub(crate) fn put(&self, key: &str, session: Arc<Session>) {
        if !self.ended.contains_key(key) {
            self.live.insert(key.to_string(), session);
        }
    }

    /// The session ended (here or on another replica).
    pub(crate) fn forget(&self, key: &str) {
        self.ended.insert(key.to_string(), ());
        self.live.invalidate(key);
    }

    /// Invalidation messages may have been missed (the subscription was down).
    pub(crate) fn forget_all(&self) {
        self.live.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::identity::ProtocolHandle;

    fn session() -> Arc<Session> {
        Arc::new(Session {
            tenant: None,
            provider: "p".into(),
            user: "u".into(),
            firstname: None,
            lastname: None,
            email: None,
            handle: ProtocolHandle::Oidc {
                sub: "s".into(),
                sid: None,
                id_token: "t".into(),
            },
            csrf: "c".into(),
            created: 0,
            last_seen: 0,
        })
    }

    #[test]
    fn a_forgotten_session_cannot_be_put_back_by_a_racing_read() {
        let c = SessionCache::new(Duration::from_secs(60), 100);
        c.put("k", session());
        assert!(c.get("k").is_some());
        c.forget("k");
        assert!(c.get("k").is_none());
        // A read that started before the logout lands after it: still gone.
        c.put("k", session());
        assert!(c.get("k").is_none());
        c.put("other", session());
        c.forget_all();
        assert!(c.get("other").is_none());
    }
}
