//! `store:` — where sessions and shared counters live: in memory, or in Redis for replicas.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    #[serde(default = "default_key_prefix")]
    pub redis_key_prefix: String,
    /// The Redis password, read from this file (secrets never inline). The environment
    /// variable MOODLE_EDGE_REDIS_PASSWORD is used when no file is named.
    #[serde(default)]
    pub redis_password_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::default(),
            redis_url: default_redis_url(),
            redis_key_prefix: default_key_prefix(),
            redis_password_file: None,
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
