//! The Redis back end, for several replicas. Keys are prefixed with `store.redis_key_prefix`;
//! the password comes from a file or the environment, never from the URL.
//!
//! Every operation is bounded: the connection manager has the configured connect and command
//! timeouts, and the whole operation (connecting included) is cut off at their sum, so a
//! frozen or unreachable Redis never holds a request longer. The manager reconnects by
//! itself after an I/O error; with Sentinel a failed operation also drops it, so the next one
//! asks the sentinels for the master again (after a failover the old address is dead or a
//! read-only replica).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, SetExpiry, SetOptions};

use super::config::StoreConfig;
use super::metrics::StoreMetrics;
use super::pubsub::Hub;
use super::redis_connect::Target;
use super::StoreError;

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Publish and subscribe across replicas, over its own connection.
    pub(super) hub: Hub,
}

struct Inner {
    /// Where new connections go (a fixed server, or the sentinels' master).
    target: Target,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Made on first use and shared by every request (one multiplexed connection).
    conn: Mutex<Option<ConnectionManager>>,
    metrics: Arc<StoreMetrics>,
}

impl RedisStore {
    pub fn new(cfg: &StoreConfig, metrics: Arc<StoreMetrics>) -> Result<Self, StoreError> {
        let target = Target::build(cfg)?;
        Ok(RedisStore {
            hub: Hub::redis(&cfg.redis_key_prefix, target.pubsub_client()),
            inner: Arc::new(Inner {
                target,
                prefix: cfg.redis_key_prefix.clone(),
                connect_timeout: cfg.redis_connect_timeout.get(),
                command_timeout: cfg.redis_command_timeout.get(),
                conn: Mutex::new(None),
                metrics,
            }),
        })
    }

    /// The prefixed key.
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key)
    }

    pub(super) async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.slot().clone() {
            return Ok(c);
        }
        let client = self.inner.target.client(self.inner.connect_timeout).await?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.connect_timeout))
            .set_response_timeout(Some(self.inner.command_timeout))
            // Fail this request fast; the next one tries again (no backoff queue to wait in).
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client, cfg)?;
        let mut slot = self.slot();
        // Another request may have made one meanwhile: keep the first.
        Ok(slot.get_or_insert(manager).clone())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        // A poisoned lock only means a panic elsewhere mid-assignment: the Option is still valid.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one operation on a connection, bounded in time and measured.
    /// The operation is boxed: the redis crate's futures are deep, and callers nest them in
    /// the request's own future (a plain `async` here overflows the compiler's layout depth).
    pub(crate) async fn run<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut + Send + 'a,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'a,
        T: Send + 'a,
    {
        let start = Instant::now();
        let limit = self.inner.connect_timeout + self.inner.command_timeout;
        let work: Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>> =
            Box::pin(async move {
                let c = self.conn().await?;
                f(c).await.map_err(StoreError::from)
            });
        let result = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(op)),
        };
        self.inner
            .metrics
            .round_trip(op, start.elapsed(), result.is_ok());
        if result.is_err() && self.inner.target.is_sentinel() {
            // Ask the sentinels again next time: the master may have moved.
            *self.slot() = None;
        }
        result
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key);
        self.run("get", |mut c| async move { c.get(key).await })
            .await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        let ms = ttl.as_millis().max(1) as u64;
        self.run(
            "set",
            |mut c| async move { c.pset_ex(key, value, ms).await },
        )
        .await
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.key(key);
        let opts = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let reply: Option<String> = self
            .run("set_if_absent", |mut c| async move {
                c.set_options(key, value, opts).await
            })
            .await?;
        Ok(reply.is_some())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run("delete", |mut c| async move { c.del(key).await })
            .await
    }

    /// SADD and PEXPIRE in one MULTI: the set never lives on without its lifetime.
    pub async fn members_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(key);
        let ms = ttl.as_millis().max(1) as i64;
        self.run("members_add", |mut c| async move {
            redis::pipe()
                .atomic()
                .sadd(&key, member)
                .ignore()
                .pexpire(&key, ms)
                .ignore()
                .query_async(&mut c)
                .await
        })
        .await
    }

    pub async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = self.key(key);
        self.run("members", |mut c| async move { c.smembers(key).await })
            .await
    }

    pub async fn members_remove(&self, key: &str, gone: &[String]) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run(
            "members_remove",
            |mut c| async move { c.srem(key, gone).await },
        )
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run("ping", |mut c| async move {
                redis::cmd("PING").query_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    /// How many keys start with `prefix` (SCAN, in steps, so Redis is never blocked long).
    pub async fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let pattern = format!("{}*", self.key(prefix));
        let mut cursor: u64 = 0;
        let mut n = 0u64;
        loop {
            let p = pattern.clone();
            let (next, keys): (u64, Vec<String>) = self
                .run("scan", |mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(p)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            n += keys.len() as u64;
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}
