//! The Redis back end, for several replicas. Keys are prefixed with `store.redis_key_prefix`;
//! the password comes from a file or the environment, never from the URL.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, SetExpiry, SetOptions};
use tokio::sync::OnceCell;

use super::config::StoreConfig;
use super::pubsub::Hub;
use super::StoreError;

#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    /// Made on first use; the manager reconnects by itself after that.
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    /// Publish and subscribe across replicas, over its own connection.
    pub(super) hub: Hub,
}

impl RedisStore {
    pub fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let mut info: redis::ConnectionInfo = cfg
            .redis_url
            .as_str()
            .parse()
            .map_err(|e: redis::RedisError| StoreError::Url(e.to_string()))?;
        let password = match &cfg.redis_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| StoreError::PasswordFile {
                        path: path.display().to_string(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("MOODLE_EDGE_REDIS_PASSWORD").ok(),
        };
        if let Some(p) = password {
            let redis_info = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(redis_info);
        }
        let client = Client::open(info)?;
        Ok(RedisStore {
            hub: Hub::redis(&cfg.redis_key_prefix, client.clone()),
            client,
            prefix: cfg.redis_key_prefix.clone(),
            conn: Default::default(),
        })
    }

    pub(super) async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await?;
        Ok(conn.clone())
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn().await?.get(self.key(key)).await?)
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        let _: () = self.conn().await?.pset_ex(self.key(key), value, ms).await?;
        Ok(())
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let opts = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let reply: Option<String> = self
            .conn()
            .await?
            .set_options(self.key(key), value, opts)
            .await?;
        Ok(reply.is_some())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _: () = self.conn().await?.del(self.key(key)).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
