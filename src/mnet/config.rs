//! `mnet:` — the site's MNet key pair, its history and the peers it trusts. Parsed and
//! validated now; the envelope gateway is the MNet issue's work.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::units::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnetConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub key_history_dir: Option<PathBuf>,
    #[serde(default = "default_skew")]
    pub max_clock_skew: Duration,
    #[serde(default)]
    pub peers: Vec<MnetPeerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnetPeerConfig {
    pub wwwroot: String,
    pub cert_file: PathBuf,
    #[serde(default)]
    pub allow: Vec<String>,
    /// Source CIDRs; empty = any.
    #[serde(default)]
    pub networks: Vec<IpNet>,
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}
