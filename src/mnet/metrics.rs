//! MNet metrics: calls by peer, method and outcome, refusals by reason, crypto time by
//! operation, and the days left on every certificate. Registered once per process.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct MnetMetrics {
    /// Every inbound call: peer (configured wwwroot or "unknown"), method (an allowed one, or
    /// "other" to keep the label set small), outcome (forwarded or a refusal reason).
    pub calls: IntCounterVec,
    pub refusals: IntCounterVec,
    /// open, verify, sign, seal.
    pub crypto_seconds: HistogramVec,
    /// Days to expiry of the site's current certificate ("site") and each peer's.
    pub days_to_expiry: IntGaugeVec,
    /// Age in days of the site's current certificate.
    pub key_age_days: IntGaugeVec,
    /// Unix time of each peer's last call that passed the gateway.
    pub last_call: IntGaugeVec,
    /// Changed peer keys seen, by peer and action (held, accepted): a held one waits for
    /// the operator.
    pub key_changes: IntCounterVec,
}

impl MnetMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = MnetMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "moodle_edge_mnet_calls_total",
                    "Inbound MNet calls by peer, method and outcome.",
                ),
                &["peer", "method", "outcome"],
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "moodle_edge_mnet_refusals_total",
                    "MNet messages refused at the edge, by reason.",
                ),
                &["reason"],
            )?,
            crypto_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "moodle_edge_mnet_crypto_seconds",
                    "Time in MNet crypto operations.",
                )
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
                ]),
                &["op"],
            )?,
            days_to_expiry: IntGaugeVec::new(
                Opts::new(
                    "moodle_edge_mnet_cert_days_to_expiry",
                    "Days until an MNet certificate expires.",
                ),
                &["key"],
            )?,
            key_age_days: IntGaugeVec::new(
                Opts::new(
                    "moodle_edge_mnet_key_age_days",
                    "Age of the site's current MNet key pair, in days.",
                ),
                &["key"],
            )?,
            last_call: IntGaugeVec::new(
                Opts::new(
                    "moodle_edge_mnet_peer_last_call_timestamp_seconds",
                    "When each peer last called through the gateway.",
                ),
                &["peer"],
            )?,
            key_changes: IntCounterVec::new(
                Opts::new(
                    "moodle_edge_mnet_peer_key_changes_total",
                    "Changed MNet peer keys seen, by peer and action (held or accepted).",
                ),
                &["peer", "action"],
            )?,
        };
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.refusals.clone()))?;
        registry.register(Box::new(m.crypto_seconds.clone()))?;
        registry.register(Box::new(m.days_to_expiry.clone()))?;
        registry.register(Box::new(m.key_age_days.clone()))?;
        registry.register(Box::new(m.last_call.clone()))?;
        registry.register(Box::new(m.key_changes.clone()))?;
        Ok(m)
    }

    /// Records how long one crypto operation (open, verify, sign, seal) took since `started`.
    pub(crate) fn observe_crypto(&self, op: &str, started: Instant) {
        self.crypto_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}
