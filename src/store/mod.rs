//! Where state that outlives a request lives: in memory for one machine (moka), or in Redis so
//! several replicas share it. One enum over both back ends, so callers never care which.
//!
//! Its users: single sign-on sessions (with a per-replica cache in front, `sso::session`),
//! OIDC login state and back-channel `jti`s, the SAML replay cache and pending requests, the
//! MNet replay cache. `/readyz` checks that it answers. docs/scale-out.md has the keys and the
//! fault policy.

pub(crate) mod config;
pub(crate) mod gcra;
mod memory;
pub(crate) mod metrics;
mod pubsub;
mod redis_connect;
mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{broadcast, watch};

pub use memory::MemoryStore;
pub(crate) use redis_store::RedisStore;

use config::{StoreBackend, StoreConfig};
use metrics::StoreMetrics;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot read {key} {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("store.redis_url: {0}")]
    Url(String),
    #[error("redis: {0} did not answer in time")]
    Timeout(&'static str),
    #[error("store metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The store chosen by `store.backend`.
#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Builds the store. For Redis this does not connect yet: the connection is made lazily and
    /// re-made after failures, so a Redis restart does not need a proxy restart.
    pub fn build(cfg: &StoreConfig) -> Result<Store, StoreError> {
        Self::build_with(cfg, Arc::new(StoreMetrics::unregistered()?))
    }

    /// Builds the store recording into the process's metrics.
    pub fn build_with(cfg: &StoreConfig, metrics: Arc<StoreMetrics>) -> Result<Store, StoreError> {
        match cfg.backend {
            StoreBackend::Memory => Ok(Store::Memory(MemoryStore::new(1_000_000))),
            StoreBackend::Redis => Ok(Store::Redis(RedisStore::new(cfg, metrics)?)),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key)),
            Store::Redis(r) => r.get(key).await,
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            Store::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    /// Stores the value only if the key is absent; true when it was stored. This is the
    /// primitive a replay cache needs (a SAML assertion ID or MNet nonce seen twice).
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.set_if_absent(key, value, ttl)),
            Store::Redis(r) => r.set_if_absent(key, value, ttl).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.delete(key);
                Ok(())
            }
            Store::Redis(r) => r.delete(key).await,
        }
    }

    /// Adds `member` to the set under `key` (made if absent), which then lives `ttl` from now.
    /// Atomic on both back ends: adds at the same instant from several replicas all land.
    pub async fn members_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.members_add(key, member, ttl);
                Ok(())
            }
            Store::Redis(r) => r.members_add(key, member, ttl).await,
        }
    }

    /// The members of the set under `key`, in no order (none when absent).
    pub async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.members(key)),
            Store::Redis(r) => r.members(key).await,
        }
    }

    /// Takes members out of the set under `key`; an emptied set is gone.
    pub async fn members_remove(&self, key: &str, gone: &[String]) -> Result<(), StoreError> {
        // Nothing to take out is no write (nor a round trip) on either back end.
        if gone.is_empty() {
            return Ok(());
        }
        match self {
            Store::Memory(m) => {
                m.members_remove(key, gone);
                Ok(())
            }
            Store::Redis(r) => r.members_remove(key, gone).await,
        }
    }

    /// How many keys start with `prefix` (the active-sessions gauge).
    pub async fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.count_prefix(prefix)),
            Store::Redis(r) => r.count_prefix(prefix).await,
        }
    }

    /// Sends `payload` to every subscriber of `channel` on every replica (this one included).
    /// The channel's name in Redis is `store.redis_key_prefix` + `channel`. Delivery is at
    /// most once: a replica whose pub/sub connection is down misses it (see [`Store::epochs`]).
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.hub.deliver_local(channel, payload);
                Ok(())
            }
            Store::Redis(r) => {
                let name = r.hub.full_name(channel);
                pubsub::publish(&mut r.conn().await?, &name, payload).await
            }
        }
    }

    /// Every later message published on `channel`. One background task per store keeps a
    /// dedicated pub/sub connection and re-makes it after Redis faults. Needs a tokio runtime.
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Bytes> {
        self.hub().subscribe(channel)
    }

    /// Moves each time the pub/sub subscriptions are (re)established. Messages sent while the
    /// connection was down are lost, so a subscriber that keeps state also in keys re-reads it
    /// when this moves. Starts at 0; the memory store never moves it.
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.hub().epochs()
    }

    /// Like [`Store::publish`], and the payload is also kept under `key` for `keep` (None
    /// deletes it), so a replica that starts or reconnects later reads it with
    /// [`Store::retained`]. The memory store only delivers locally.
    pub async fn publish_retained(
        &self,
        channel: &str,
        key: &str,
        payload: &[u8],
        keep: Option<Duration>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.hub.deliver_local(channel, payload);
                Ok(())
            }
            Store::Redis(r) => {
                let name = r.hub.full_name(channel);
                let key = r.key(key);
                pubsub::publish_retained(&mut r.conn().await?, &name, &key, payload, keep).await
            }
        }
    }

    /// The payload kept under `key` by [`Store::publish_retained`] and how long it is still
    /// kept; the memory store keeps none (there is no other replica to hear from).
    pub async fn retained(&self, key: &str) -> Result<Option<(Vec<u8>, Duration)>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(r) => pubsub::retained(&mut r.conn().await?, &r.key(key)).await,
        }
    }

    fn hub(&self) -> &pubsub::Hub {
        match self {
            Store::Memory(m) => &m.hub,
            Store::Redis(r) => &r.hub,
        }
    }

    /// For /readyz: the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.ping().await,
        }
    }
}
