//! `mnet:` — the site's MNet key pair, its history, the peers it trusts and the gateway's
//! limits. Files are checked to exist by the config validation; their contents are read when
//! the state is built (`MnetState::build`), so `moodle-edge check` names a bad key too.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::units::{Duration, Size};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnetConfig {
    /// The site's current certificate: signs answers, is published, opens first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Earlier pairs, one file each (CERT@@@@@@@@KEY or both PEM blocks): still open
    /// messages sealed to them (answered with fault 7025 and the current certificate).
    #[serde(default)]
    pub key_history_dir: Option<PathBuf>,
    /// How far a message's timestamp may be from the proxy's clock, either way.
    #[serde(default = "default_skew")]
    pub max_clock_skew: Duration,
    /// How long a message's signature is remembered against replay; at least
    /// 2 x max_clock_skew (the default), see docs/mnet.md for why longer is stronger.
    #[serde(default)]
    pub replay_ttl: Option<Duration>,
    /// What makes two messages the same for the replay cache (docs/mnet.md).
    #[serde(default)]
    pub replay_key: ReplayKey,
    /// Largest envelope read; larger gets a fault (Moodle's calls are a few KB).
    #[serde(default = "default_max_message")]
    pub max_message_size: Size,
    /// Deepest XML element nesting accepted, in the envelope and the XML-RPC inside.
    #[serde(default = "default_depth")]
    pub max_xml_depth: usize,
    /// Who may call `system/keyswap` at the edge: `peers` (configured peers only) or `anyone`.
    #[serde(default)]
    pub keyswap: KeyswapPolicy,
    /// Days before the current certificate's expiry when /readyz and the log start warning.
    #[serde(default = "default_warn_days")]
    pub expiry_warning_days: u32,
    #[serde(default)]
    pub peers: Vec<MnetPeerConfig>,
}

/// `content`: the signed XML-RPC text alone, so an identical call is refused for `replay_ttl`
/// however its unsigned timestamp was changed. `content_and_timestamp`: the text and its
/// timestamp, so a peer may repeat an identical call a second later (Moodle's admin pages and
/// logouts do), at the price of a replay whose timestamp was rewritten inside the RC4 stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayKey {
    #[default]
    Content,
    ContentAndTimestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyswapPolicy {
    #[default]
    Peers,
    Anyone,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnetPeerConfig {
    pub wwwroot: String,
    pub cert_file: PathBuf,
    /// Methods this peer may call; a trailing `*` matches a prefix. Empty = none.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Source CIDRs; empty = any.
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// What a changed key of this peer (offered by keyswap, or fetched when a call's signature
    /// fails) does: `hold` for the operator, or `accept` it as Moodle does.
    #[serde(default)]
    pub on_key_change: KeyChangePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangePolicy {
    /// Logged, counted and saved beside `cert_file` as `.offered`; the pinned key stays.
    #[default]
    Hold,
    /// Logged, counted, written over `cert_file` and used at once (Moodle's behaviour).
    Accept,
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_max_message() -> Size {
    Size(1 << 20)
}

fn default_depth() -> usize {
    32
}

fn default_warn_days() -> u32 {
    7
}
