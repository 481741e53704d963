//! The offload stage's Prometheus metrics. Created once per process and shared (`Arc`) by every
//! `Offloader` a config reload builds, so counters never reset and never register twice.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct SendfileMetrics {
    /// Every answer to an offload header, by header kind (`accel`/`sendfile`) and status sent.
    pub responses: IntCounterVec,
    /// Body bytes handed to hyper (multipart framing included).
    pub bytes_sent: IntCounter,
    /// File bodies alive right now; a body decrements it when dropped, which also happens when
    /// the client goes away mid-download.
    pub active_streams: IntGauge,
    /// Offloads not served, by [`Refusal::label`](super::path::Refusal::label).
    pub refusals: IntCounterVec,
}

impl SendfileMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let responses = IntCounterVec::new(
            Opts::new(
                "moodle_edge_offload_responses_total",
                "Responses to X-Accel-Redirect / X-Sendfile answers, by kind and status",
            ),
            &["kind", "status"],
        )?;
        let bytes_sent = IntCounter::new(
            "moodle_edge_offload_bytes_sent_total",
            "Body bytes streamed from offloaded files",
        )?;
        let active_streams = IntGauge::new(
            "moodle_edge_offload_active_streams",
            "Offloaded file bodies currently streaming",
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "moodle_edge_offload_refusals_total",
                "Offload answers refused, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(bytes_sent.clone()))?;
        registry.register(Box::new(active_streams.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        Ok(SendfileMetrics {
            responses,
            bytes_sent,
            active_streams,
            refusals,
        })
    }

    /// The same metrics on a private registry, for tests and tools that export nothing.
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Self::register(&Registry::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_refuses_twice() {
        let registry = Registry::new();
        let metrics = SendfileMetrics::register(&registry).unwrap();
        metrics.responses.with_label_values(&["accel", "200"]).inc();
        metrics.refusals.with_label_values(&["traversal"]).inc();
        metrics.bytes_sent.inc_by(10);
        metrics.active_streams.inc();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "moodle_edge_offload_responses_total",
            "moodle_edge_offload_bytes_sent_total",
            "moodle_edge_offload_active_streams",
            "moodle_edge_offload_refusals_total",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
        assert!(SendfileMetrics::register(&registry).is_err());
    }
}
