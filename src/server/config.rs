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
    /// Per-connection HTTP/2 limits: what one abusive client can hold (docs/hardening.md).
    #[serde(default)]
    pub http2: Http2Config,
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

/// `server.http2`: the limits that bound one HTTP/2 connection's cost. The defaults hold the
/// known denial-of-service patterns (rapid reset, CONTINUATION and SETTINGS/PING floods, zero
/// windows) to a small, stated bound; docs/hardening.md has the measurements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Config {
    /// Streams one client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[serde(default = "default_h2_streams")]
    pub max_concurrent_streams: u32,
    /// Decoded header block of one request; larger is refused. Unset: `limits.max_header_size`.
    #[serde(default)]
    pub max_header_list_size: Option<Size>,
    /// Streams a client opened and reset before the proxy accepted them; more is a rapid-reset
    /// attack (CVE-2023-44487) and ends the connection.
    #[serde(default = "default_h2_pending_resets")]
    pub max_pending_accept_reset_streams: usize,
    /// Streams the proxy itself had to reset for the client's protocol errors; more ends the
    /// connection (the 2025 "MadeYouReset" pattern).
    #[serde(default = "default_h2_local_resets")]
    pub max_local_error_reset_streams: usize,
    /// Request-body bytes one stream may send before the proxy reads them.
    #[serde(default = "default_h2_window")]
    pub initial_stream_window: Size,
    /// Request-body bytes the whole connection may send ahead: bounds what is buffered.
    #[serde(default = "default_h2_window")]
    pub initial_connection_window: Size,
    /// Response bytes queued per stream for a client that does not read (zero window).
    #[serde(default = "default_h2_send_buf")]
    pub max_send_buf_size: Size,
    /// SETTINGS, PING, PRIORITY and empty frames one connection may send, plus 4 per request
    /// it makes; more ends it (server/h2_flood.rs).
    #[serde(default = "default_h2_control_frames")]
    pub max_control_frames: u64,
    /// A PING this often finds dead peers; `0s` turns it off.
    #[serde(default = "default_h2_ping_interval")]
    pub keep_alive_interval: Duration,
    /// No PING answer within this closes the connection.
    #[serde(default = "default_h2_ping_timeout")]
    pub keep_alive_timeout: Duration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: default_h2_streams(),
            max_header_list_size: None,
            max_pending_accept_reset_streams: default_h2_pending_resets(),
            max_local_error_reset_streams: default_h2_local_resets(),
            initial_stream_window: default_h2_window(),
            initial_connection_window: default_h2_window(),
            max_send_buf_size: default_h2_send_buf(),
            max_control_frames: default_h2_control_frames(),
            keep_alive_interval: default_h2_ping_interval(),
            keep_alive_timeout: default_h2_ping_timeout(),
        }
    }
}

impl Http2Config {
    /// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
    const MAX_WINDOW: u64 = (1 << 31) - 1;
    /// The smallest window HTTP/2 starts with; a smaller one only slows uploads down.
    const MIN_WINDOW: u64 = 65_535;

    /// Config errors as (key under `server.http2`, what is wrong).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_concurrent_streams == 0 {
            out.push((
                "max_concurrent_streams",
                "must be at least 1 (0 refuses every request)".to_string(),
            ));
        }
        for (key, size) in [
            ("initial_stream_window", self.initial_stream_window),
            ("initial_connection_window", self.initial_connection_window),
        ] {
            if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&size.bytes()) {
                out.push((
                    key,
                    format!(
                        "must be between {} and {} bytes",
                        Self::MIN_WINDOW,
                        Self::MAX_WINDOW
                    ),
                ));
            }
        }
        if let Some(size) = self.max_header_list_size {
            if size.bytes() == 0 || size.bytes() > u64::from(u32::MAX) {
                out.push((
                    "max_header_list_size",
                    "must be between 1 byte and 4GiB".to_string(),
                ));
            }
        }
        if self.max_send_buf_size.bytes() == 0 {
            out.push(("max_send_buf_size", "must be at least 1 byte".to_string()));
        }
        out
    }
}

fn default_h2_streams() -> u32 {
    128
}
fn default_h2_pending_resets() -> usize {
    20
}
fn default_h2_local_resets() -> usize {
    128
}
fn default_h2_window() -> Size {
    Size(1 << 20)
}
fn default_h2_send_buf() -> Size {
    Size(64 << 10)
}
fn default_h2_control_frames() -> u64 {
    1000
}
fn default_h2_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_h2_ping_timeout() -> Duration {
    Duration::from_secs(20)
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
