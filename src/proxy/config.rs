//! `upstream:` — the Moodle web server and how the pooled connections to it behave.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::units::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The Moodle web server (Apache or nginx with PHP-FPM): http:// or https://.
    pub url: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// From the end of the request to the upstream's response header.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Duration,
    /// Longest pause between two body chunks in either direction once the response started.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per upstream host.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// An idle pooled connection is closed after this long (keep it below the web server's).
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Duration,
    /// Extra CA bundle (PEM) for an https upstream with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// Requests without a body to an http:// upstream take the direct path (HTTP/1.1 spoken in
    /// the request's own task, see src/proxy/direct.rs); false sends every request through
    /// hyper's pooled client.
    #[serde(default = "default_true")]
    pub direct: bool,
}

fn default_true() -> bool {
    true
}

/// The readiness probe sent to the upstream: any answer below 500 counts as "up".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_max_idle() -> usize {
    128
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_health_path() -> String {
    "/".to_string()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
