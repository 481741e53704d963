//! The in-memory back end: a bounded moka cache whose entries carry their own expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::pubsub::Hub;

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

/// Each entry expires after the TTL it was stored with.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    /// Publish and subscribe within this process (there is no other replica).
    pub(super) hub: Hub,
}

impl MemoryStore {
    pub fn new(max_entries: u64) -> Self {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            hub: Hub::local(""),
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).map(|e| e.value.to_vec())
    }

    pub fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        self.cache.insert(
            key.to_string(),
            Entry {
                value: value.into(),
                ttl,
            },
        );
    }

    pub fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let entry = self.cache.entry(key.to_string()).or_insert_with(|| Entry {
            value: value.into(),
            ttl,
        });
        entry.is_fresh()
    }

    pub fn delete(&self, key: &str) {
        self.cache.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_and_expiry() {
        let s = MemoryStore::new(100);
        s.set("a", b"1", Duration::from_secs(60));
        assert_eq!(s.get("a").as_deref(), Some(&b"1"[..]));
        s.delete("a");
        assert_eq!(s.get("a"), None);
        s.set("b", b"2", Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.get("b"), None);
    }

    #[test]
    fn set_if_absent_refuses_a_second_write() {
        let s = MemoryStore::new(100);
        assert!(s.set_if_absent("nonce", b"x", Duration::from_secs(60)));
        assert!(!s.set_if_absent("nonce", b"y", Duration::from_secs(60)));
        assert_eq!(s.get("nonce").as_deref(), Some(&b"x"[..]));
    }
}
