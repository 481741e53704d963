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

    /// Adds `member` to the set under `key` and gives the set `ttl` from now. One atomic step
    /// per key (moka's compute), so two adds at the same instant both land.
    pub fn members_add(&self, key: &str, member: &str, ttl: Duration) {
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let mut set = current
                .map(|e| decode_set(&e.into_value().value))
                .unwrap_or_default();
            if !set.iter().any(|m| m == member) {
                set.push(member.to_string());
            }
            moka::ops::compute::Op::Put(Entry {
                value: encode_set(&set).into(),
                ttl,
            })
        });
    }

    /// The members of the set under `key` (none when it is absent).
    pub fn members(&self, key: &str) -> Vec<String> {
        self.cache
            .get(key)
            .map(|e| decode_set(&e.value))
            .unwrap_or_default()
    }

    /// Takes `gone` out of the set under `key` (its lifetime starts again: moka keeps one per
    /// entry, set at each write); drops an emptied set.
    pub fn members_remove(&self, key: &str, gone: &[String]) {
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let Some(entry) = current.map(|e| e.into_value()) else {
                return moka::ops::compute::Op::Nop;
            };
            let set: Vec<String> = decode_set(&entry.value)
                .into_iter()
                .filter(|m| !gone.contains(m))
                .collect();
            if set.is_empty() {
                moka::ops::compute::Op::Remove
            } else {
                moka::ops::compute::Op::Put(Entry {
                    value: encode_set(&set).into(),
                    ..entry
                })
            }
        });
    }

    /// Live keys that start with `prefix` (a walk over every entry: for a gauge, not a request).
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .count() as u64
    }
}

/// A set is kept as its members, one per line: members are store keys, which hold no newline.
fn encode_set(set: &[String]) -> Vec<u8> {
    set.join("\n").into_bytes()
}

fn decode_set(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split('\n')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
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

    #[test]
    fn set_members_survive_adds_from_many_threads_at_once() {
        let s = MemoryStore::new(100);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..50 {
                        s.members_add("h", &format!("k{t}-{i}"), Duration::from_secs(60));
                    }
                });
            }
        });
        let mut members = s.members("h");
        members.sort();
        members.dedup();
        assert_eq!(members.len(), 400, "a concurrent add was lost");
        s.members_add("h", "k0-0", Duration::from_secs(60));
        assert_eq!(s.members("h").len(), 400, "a member is kept once");
    }

    #[test]
    fn removing_every_member_drops_the_set() {
        let s = MemoryStore::new(100);
        s.members_add("h", "a", Duration::from_secs(60));
        s.members_add("h", "b", Duration::from_secs(60));
        s.members_remove("h", &["a".to_string()]);
        assert_eq!(s.members("h"), vec!["b".to_string()]);
        s.members_remove("h", &["b".to_string()]);
        assert_eq!(s.get("h"), None);
        s.members_remove("absent", &["x".to_string()]);
        assert!(s.members("absent").is_empty());
    }
}
