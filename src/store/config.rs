//! `store:` — where sessions and shared counters live: in memory, or in Redis for replicas.
//! docs/scale-out.md describes every key; `problems` names the key of each mistake.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use crate::config::units::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    /// `redis://` or `rediss://` (TLS) host, port and database. With `redis_sentinel` the
    /// host and port are ignored: the sentinels name the master.
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    /// Keeps this proxy's keys apart from Moodle's own in a shared database.
    #[serde(default = "default_key_prefix")]
    pub redis_key_prefix: String,
    /// The Redis password, read from this file (secrets never inline). The environment
    /// variable MOODLE_EDGE_REDIS_PASSWORD is used when no file is named.
    #[serde(default)]
    pub redis_password_file: Option<PathBuf>,
    /// The ACL user (Redis 6+); without it the password is for the `default` user.
    #[serde(default)]
    pub redis_username: Option<String>,
    /// A PEM CA bundle for `rediss://` when the server's certificate is from a private CA
    /// (without it the web roots are trusted).
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// How long a connection attempt may take, so an unreachable Redis fails fast.
    #[serde(default = "default_connect_timeout")]
    pub redis_connect_timeout: Duration,
    /// How long one command may take: a frozen Redis never holds a request longer.
    #[serde(default = "default_command_timeout")]
    pub redis_command_timeout: Duration,
    /// Redis Sentinel: ask these sentinels which server is the master of `master_name`.
    #[serde(default)]
    pub redis_sentinel: Option<SentinelConfig>,
    /// The per-replica cache of sessions in front of Redis.
    #[serde(default)]
    pub session_cache: SessionCacheConfig,
    /// What each use does while Redis cannot be reached.
    #[serde(default)]
    pub on_error: FaultPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel (at least one; three in a real deployment).
    pub addrs: Vec<String>,
    /// The monitored master's name (`sentinel monitor NAME ...`).
    pub master_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCacheConfig {
    /// How long a replica trusts a session it read without asking Redis again; logouts are
    /// pushed to every replica at once, so this only bounds a missed push. "0s" turns it off.
    #[serde(default = "default_cache_ttl")]
    pub ttl: Duration,
    /// Sessions kept per replica.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        SessionCacheConfig {
            ttl: default_cache_ttl(),
            max_entries: default_cache_entries(),
        }
    }
}

/// Per use, what happens while the store fails. New logins, logout messages and replay caches
/// always fail closed (a login stored on one replica only, or a replay let through, would be
/// wrong); these are the uses where a choice is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPolicy {
    /// A request with a session cookie that is not in the local cache.
    #[serde(default)]
    pub session_check: SessionCheckPolicy,
    /// What `/readyz` answers.
    #[serde(default)]
    pub readiness: ReadinessPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionCheckPolicy {
    /// Goes on to Moodle, whose own session still applies.
    #[default]
    Pass,
    /// Gets a 503 page saying sign-in is unavailable.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessPolicy {
    /// 200 with the store marked degraded: every replica shares one Redis, so a 503 would
    /// make the load balancer pull all of them at once.
    #[default]
    Degraded,
    /// 503.
    Unready,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::default(),
            redis_url: default_redis_url(),
            redis_key_prefix: default_key_prefix(),
            redis_password_file: None,
            redis_username: None,
            redis_ca_file: None,
            redis_connect_timeout: default_connect_timeout(),
            redis_command_timeout: default_command_timeout(),
            redis_sentinel: None,
            session_cache: SessionCacheConfig::default(),
            on_error: FaultPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379/0".to_string()
}
fn default_key_prefix() -> String {
    "moodle-edge:".to_string()
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_command_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_cache_entries() -> u64 {
    100_000
}

impl StoreConfig {
    /// Every mistake in the section as (key, what is wrong). Files are checked by the caller.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |k: &str, m: String| out.push((format!("store.{k}"), m));
        if self.backend != StoreBackend::Redis {
            return out;
        }
        match Url::parse(&self.redis_url) {
            Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {
                if !u.password().unwrap_or("").is_empty() {
                    err(
                        "redis_url",
                        "must not carry a password; use store.redis_password_file".into(),
                    );
                }
                if !u.username().is_empty() {
                    err(
                        "redis_url",
                        "must not carry a user name; use store.redis_username".into(),
                    );
                }
                let db = u.path().trim_start_matches('/');
                if !db.is_empty() && db.parse::<u32>().is_err() {
                    err(
                        "redis_url",
                        format!("database {db:?} must be a number (redis://host:6379/0)"),
                    );
                }
            }
            _ => err(
                "redis_url",
                format!("{:?} is not a redis:// or rediss:// URL", self.redis_url),
            ),
        }
        if self.redis_username.as_deref().is_some_and(str::is_empty) {
            err("redis_username", "must not be empty".into());
        }
        if self.redis_ca_file.is_some() && !self.redis_url.starts_with("rediss://") {
            err(
                "redis_ca_file",
                "is only used with a rediss:// store.redis_url".into(),
            );
        }
        for (key, d) in [
            ("redis_connect_timeout", self.redis_connect_timeout),
            ("redis_command_timeout", self.redis_command_timeout),
        ] {
            if d.get().is_zero() || d.get() > std::time::Duration::from_secs(30) {
                err(key, format!("{d} must be above 0 and at most 30s"));
            }
        }
        if let Some(s) = &self.redis_sentinel {
            if s.addrs.is_empty() {
                err("redis_sentinel.addrs", "name at least one sentinel".into());
            }
            for (i, a) in s.addrs.iter().enumerate() {
                if !valid_host_port(a) {
                    err(
                        &format!("redis_sentinel.addrs[{i}]"),
                        format!("{a:?} is not host:port"),
                    );
                }
            }
            if s.master_name.is_empty() {
                err("redis_sentinel.master_name", "must not be empty".into());
            }
        }
        if self.session_cache.max_entries == 0 {
            err("session_cache.max_entries", "must be at least 1".into());
        }
        if self.session_cache.ttl.get() > std::time::Duration::from_secs(300) {
            err(
                "session_cache.ttl",
                format!(
                    "{} is too long: a missed logout push would hold that long (at most 5m)",
                    self.session_cache.ttl
                ),
            );
        }
        out
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub(crate) fn valid_host_port(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Redis,
            ..StoreConfig::default()
        }
    }

    fn keys(c: &StoreConfig) -> Vec<String> {
        c.problems().into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(redis().problems().is_empty());
    }

    #[test]
    fn each_mistake_names_its_key() {
        let mut c = redis();
        c.redis_url = "redis://:pw@127.0.0.1:6379/0".into();
        assert_eq!(keys(&c), ["store.redis_url"]);
        c.redis_url = "http://127.0.0.1".into();
        assert_eq!(keys(&c), ["store.redis_url"]);
        c.redis_url = "redis://127.0.0.1:6379/zero".into();
        assert_eq!(keys(&c), ["store.redis_url"]);
        let mut c = redis();
        c.redis_ca_file = Some("/ca.pem".into());
        assert_eq!(keys(&c), ["store.redis_ca_file"]);
        let mut c = redis();
        c.redis_command_timeout = Duration::from_millis(0);
        assert_eq!(keys(&c), ["store.redis_command_timeout"]);
        let mut c = redis();
        c.redis_sentinel = Some(SentinelConfig {
            addrs: vec!["127.0.0.1".into()],
            master_name: String::new(),
        });
        assert_eq!(
            keys(&c),
            [
                "store.redis_sentinel.addrs[0]",
                "store.redis_sentinel.master_name"
            ]
        );
        let mut c = redis();
        c.session_cache.ttl = Duration::from_secs(3600);
        assert_eq!(keys(&c), ["store.session_cache.ttl"]);
    }

    #[test]
    fn the_memory_backend_ignores_redis_keys() {
        let c = StoreConfig {
            redis_url: "nonsense".into(),
            ..StoreConfig::default()
        };
        assert!(c.problems().is_empty());
    }
}
