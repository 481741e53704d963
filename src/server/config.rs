//! `server:` — the public listeners, the admin listener and the limits that protect them.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::units::{Duration, Size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One or more public listeners.
    pub listen: Vec<ListenConfig>,
    /// GET /metrics, /healthz, /readyz. Never on a public port.
    #[serde(default, deserialize_with = "crate::config::units::opt_socket_addr")]
    pub admin_addr: Option<SocketAddr>,
    /// CIDRs whose X-Forwarded-For / X-Forwarded-Proto are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// SIGTERM: stop accepting, let in-flight requests finish for this long, then exit.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Tokio worker threads; 0 (the default) means one per core.
    #[serde(default)]
    pub worker_threads: usize,
    /// A health path answered on every public listener, for load balancers that cannot reach
    /// the admin port. Empty string turns it off.
    #[serde(default = "default_public_health_path")]
    pub public_health_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(deserialize_with = "crate::config::units::socket_addr")]
    pub addr: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Answer every request on this (plain) listener with a 308 to the same URL over https.
    #[serde(default)]
    pub redirect_to_https: bool,
    /// Port used in that redirect; defaults to 443 (omitted from the URL).
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Accept HTTP/2 (ALPN h2 over TLS; prior-knowledge h2c on plain listeners).
    #[serde(default = "default_true")]
    pub http2: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Picked by SNI; the first one is the default for clients that send no (or no known) name.
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client connections at once; further connections wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Request line and headers together; larger gets 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: Size,
    /// A client that has not sent its whole header by then is dropped (slowloris).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A larger request body gets 413.
    #[serde(default = "default_max_body_size")]
    pub max_body_size: Size,
    /// A client that sends no body byte for this long is cut off (slow uploads).
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_header_size: default_max_header_size(),
            header_read_timeout: default_header_read_timeout(),
            max_body_size: default_max_body_size(),
            client_body_timeout: default_client_body_timeout(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_public_health_path() -> String {
    "/.moodle-edge/health".to_string()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_size() -> Size {
    Size(64 << 10)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_body_size() -> Size {
    Size(2 << 30)
}
fn default_client_body_timeout() -> Duration {
    Duration::from_secs(60)
}
