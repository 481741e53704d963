//! How the Redis back end reaches its server: the URL (plain or `rediss://` TLS through the
//! redis crate's rustls support), credentials from files, and, with Sentinel, which server is
//! the master right now.
//!
//! Order: `Target::build` reads the config once -> `Target::client` names the server for a new
//! connection (a fixed address, or the sentinels' current master) -> the caller wraps it in a
//! ConnectionManager with the configured timeouts.

use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use tokio::sync::Mutex;

use super::config::StoreConfig;
use super::StoreError;

/// Where connections go.
pub(crate) enum Target {
    /// One server, as `store.redis_url` names it.
    Fixed(Client),
    /// The master the sentinels name; asked again after every connection failure. The client
    /// is `store.redis_url`'s server, for the pub/sub connection (see `pubsub_client`).
    Sentinel(Box<Mutex<SentinelClient>>, Client),
}

impl Target {
    pub(crate) fn build(cfg: &StoreConfig) -> Result<Target, StoreError> {
        let mut info: ConnectionInfo = cfg
            .redis_url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Url(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.redis_username {
            settings = settings.set_username(user);
        }
        if let Some(p) = password(cfg)? {
            settings = settings.set_password(p);
        }
        info = info.set_redis_settings(settings.clone());
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let certificates = match &cfg.redis_ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|source| StoreError::File {
                    key: "store.redis_ca_file",
                    path: path.display().to_string(),
                    source,
                })?),
            }),
            None => None,
        };
        let fixed = match certificates.clone() {
            Some(c) => Client::build_with_tls(info, c)?,
            None => Client::open(info)?,
        };
        let Some(sentinel) = &cfg.redis_sentinel else {
            return Ok(Target::Fixed(fixed));
        };
        let addrs = sentinel
            .addrs
            .iter()
            .map(|a| {
                let (host, port) = a.rsplit_once(':').unwrap_or((a.as_str(), "26379"));
                ConnectionAddr::Tcp(host.to_string(), port.parse().unwrap_or(26379))
            })
            .collect::<Vec<_>>();
        let mut b =
            SentinelClientBuilder::new(addrs, &sentinel.master_name, SentinelServerType::Master)?
                .set_client_to_redis_db(settings.db());
        if let Some(user) = &cfg.redis_username {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(p) = password(cfg)? {
            b = b.set_client_to_redis_password(p);
        }
        if tls {
            b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(c) = certificates {
                b = b.set_client_to_redis_certificates(c);
            }
        }
        Ok(Target::Sentinel(Box::new(Mutex::new(b.build()?)), fixed))
    }

    /// A client for a new connection; with Sentinel, to the master named now (bounded by
    /// `timeout`, so a frozen sentinel cannot hold a request).
    pub(crate) async fn client(&self, timeout: Duration) -> Result<Client, StoreError> {
        match self {
            Target::Fixed(c) => Ok(c.clone()),
            Target::Sentinel(s, _) => {
                let mut s = tokio::time::timeout(timeout, s.lock())
                    .await
                    .map_err(|_| StoreError::Timeout("sentinel"))?;
                tokio::time::timeout(timeout, s.async_get_client())
                    .await
                    .map_err(|_| StoreError::Timeout("sentinel"))?
                    .map_err(StoreError::from)
            }
        }
    }

    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Target::Sentinel(..))
    }

    /// The server the pub/sub connection subscribes on. With Sentinel it is `store.redis_url`'s
    /// (any node of the group: Redis replicates every PUBLISH to the replicas), because the
    /// hub keeps one client for its reconnections; if that node is lost, logouts still hold
    /// within `store.session_cache.ttl` on the other replicas.
    pub(crate) fn pubsub_client(&self) -> Client {
        match self {
            Target::Fixed(c) | Target::Sentinel(_, c) => c.clone(),
        }
    }
}

/// The password from `store.redis_password_file`, else from MOODLE_EDGE_REDIS_PASSWORD.
fn password(cfg: &StoreConfig) -> Result<Option<String>, StoreError> {
    match &cfg.redis_password_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|source| StoreError::File {
                key: "store.redis_password_file",
                path: path.display().to_string(),
                source,
            }),
        None => Ok(std::env::var("MOODLE_EDGE_REDIS_PASSWORD").ok()),
    }
}
