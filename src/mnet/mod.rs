//! Moodle Network (MNet) at the edge. Phases of an inbound call on
//! `POST /mnet/xmlrpc/server.php` (see `inbound`):
//!
//! 1. read the envelope (bounded, `xml` + `envelope`); plain calls other than
//!    `system/keyswap` are refused, keyswap is answered here (`keyswap`);
//! 2. the peer named by the envelope (`peers`) and its source network;
//! 3. open the seal with the current key, then the history (`seal`, `keys`);
//! 4. verify the signature against the peer's certificate (`sign`); an old key gets 7025; a
//!    failed signature may fetch the peer's changed key (`key_change`, per-peer policy);
//! 5. timestamp within `max_clock_skew`, method name and allow list (`xmlrpc`);
//! 6. first sighting in the replay cache (`replay`, in the store);
//! 7. forward the still-signed message to Moodle from the proxy's address, then re-sign and
//!    re-seal Moodle's answer for the peer (`respond`).
//!
//! Every refusal is a Moodle-shaped fault (`fault`) answered here, never forwarded. The CLI's
//! `mnet` subcommands live in `cli`; `GET /mnet/publickey.php` is answered from `keys`.

pub(crate) mod cli;
pub mod client;
pub(crate) mod config;
pub(crate) mod envelope;
pub(crate) mod fault;
pub mod inbound;
pub(crate) mod key_change;
pub mod keys;
pub(crate) mod metrics;
#[cfg(test)]
mod mutation_tests;
pub(crate) mod peers;
pub(crate) mod replay;
pub(crate) mod respond;
pub(crate) mod seal;
pub(crate) mod sign;
pub(crate) mod stage;
pub(crate) mod xml;
pub(crate) mod xmlrpc;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use config::{KeyswapPolicy, MnetConfig};
use keys::{KeyError, KeyPair};
use metrics::MnetMetrics;
use peers::Peers;
use xml::XmlLimits;

#[derive(Debug, Error)]
#[error("mnet: {0}")]
pub struct MnetBuildError(#[from] KeyError);

/// Everything the gateway needs, built from `mnet:` (a reload builds a new one).
pub struct MnetState {
    /// The site's wwwroot (`moodle.wwwroot`, no trailing slash): names us in what we sign.
    pub site_wwwroot: String,
    /// Signs answers; opens first.
    pub current: KeyPair,
    /// Earlier pairs, newest first: open what peers sealed to an old certificate.
    pub history: Vec<KeyPair>,
    pub peers: Peers,
    pub max_clock_skew: Duration,
    pub replay_ttl: Duration,
    /// Whether the message's timestamp is part of the replay key.
    pub replay_key: config::ReplayKey,
    /// Bounds for every XML document read (envelope and XML-RPC alike).
    pub limits: XmlLimits,
    /// The largest answer from Moodle that is re-sealed.
    pub max_answer: usize,
    pub keyswap: KeyswapPolicy,
    pub expiry_warning_days: u32,
    pub metrics: Arc<MnetMetrics>,
}

impl MnetState {
    pub fn build(
        cfg: &MnetConfig,
        site_wwwroot: &str,
        metrics: Arc<MnetMetrics>,
    ) -> Result<MnetState, MnetBuildError> {
        let current = keys::load_pair(&cfg.cert_file, &cfg.key_file)?;
        let history = match &cfg.key_history_dir {
            Some(dir) => keys::load_history(dir)?,
            None => Vec::new(),
        };
        let peers = Peers::load(&cfg.peers)?;
        let skew = cfg.max_clock_skew.get();
        let state = MnetState {
            site_wwwroot: peers::normalize(site_wwwroot).to_string(),
            current,
            history,
            peers,
            max_clock_skew: skew,
            replay_ttl: cfg
                .replay_ttl
                .map(|d| d.get())
                .unwrap_or(skew * 2)
                .max(skew * 2),
            limits: XmlLimits {
                max_bytes: usize::try_from(cfg.max_message_size.bytes()).unwrap_or(usize::MAX),
                max_depth: cfg.max_xml_depth,
                ..XmlLimits::default()
            },
            max_answer: 16 << 20,
            keyswap: cfg.keyswap,
            replay_key: cfg.replay_key,
            expiry_warning_days: cfg.expiry_warning_days,
            metrics,
        };
        state.publish_key_metrics(now_unix());
        if let Some(w) = state.expiry_warning_now() {
            tracing::warn!("mnet: {w}");
        }
        Ok(state)
    }

    fn publish_key_metrics(&self, now: i64) {
        let m = &self.metrics;
        m.days_to_expiry
            .with_label_values(&["site"])
            .set(self.current.days_left(now));
        m.key_age_days
            .with_label_values(&["site"])
            .set((now - self.current.not_before).div_euclid(86_400));
        for p in self.peers.iter() {
            m.days_to_expiry
                .with_label_values(&[p.wwwroot.as_str()])
                .set((p.cert.load().not_after - now).div_euclid(86_400));
        }
    }

    /// A warning for /readyz and the log when the site's certificate expires soon.
    pub fn expiry_warning_now(&self) -> Option<String> {
        self.expiry_warning(now_unix())
    }

    pub fn expiry_warning(&self, now: i64) -> Option<String> {
        let days = self.current.days_left(now);
        (days < i64::from(self.expiry_warning_days)).then(|| {
            format!(
                "the MNet certificate expires in {days} days: rotate it (moodle-edge mnet keygen)"
            )
        })
    }
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
