//! Prometheus metrics of the web-service guard. Created once per process and shared through an
//! `Arc`, so counters survive config reloads (a new `Guard` reuses them).

use std::collections::HashSet;
use std::sync::RwLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::webservice::breaker::Transition;

/// Distinct function labels kept beyond those named in config; later ones become "other".
pub(crate) const MAX_FUNCTION_LABELS: usize = 500;

pub struct WebserviceMetrics {
    pub calls: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub policy_refusals: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub concurrency_waits: IntCounterVec,
    pub inflight: IntGauge,
    /// Shared limits (store.backend: redis): time of each check in Redis ...
    pub limit_store_seconds: Histogram,
    /// ... failed checks by kind (error, timeout) ...
    pub limit_store_errors: IntCounterVec,
    /// ... times a fault started a fallback, and whether one is in force now ...
    pub limit_store_fallbacks: IntCounter,
    pub limit_store_degraded: IntGauge,
    /// ... and calls decided by `on_store_error` meanwhile.
    pub limit_fallback_checks: IntCounterVec,
    /// Breaker state changes sent to / received from the other replicas.
    pub breaker_sync: IntCounterVec,
    /// Breaker state changes that could not be published or read back.
    pub breaker_sync_errors: IntCounter,
    /// Function names that may be a label value. Bounded, because the names come from clients.
    labels: RwLock<LabelSet>,
}

#[derive(Default)]
struct LabelSet {
    configured: HashSet<String>,
    seen: HashSet<String>,
}

fn plausible_function(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl WebserviceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let calls = counter(
            "moodle_edge_ws_calls_total",
            "Web-service calls that reached Moodle, by function and outcome class.",
            &["function", "outcome"],
        )?;
        let rate_limited = counter(
            "moodle_edge_ws_rate_limited_total",
            "Web-service calls refused by a rate limit, by rule name.",
            &["limit"],
        )?;
        let policy_refusals = counter(
            "moodle_edge_ws_policy_refusals_total",
            "Web-service calls refused by function policy or token networks.",
            &["reason"],
        )?;
        let breaker_transitions = counter(
            "moodle_edge_ws_breaker_transitions_total",
            "Circuit breaker state changes, by scope (upstream or function) and new state.",
            &["scope", "to"],
        )?;
        let concurrency_waits = counter(
            "moodle_edge_ws_concurrency_waits_total",
            "Calls that had to wait for a per-token slot, by result.",
            &["result"],
        )?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "moodle_edge_ws_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            &["scope"],
        )?;
        registry.register(Box::new(breaker_state.clone()))?;
        let inflight = IntGauge::new("moodle_edge_ws_inflight", "Web-service calls in flight.")?;
        registry.register(Box::new(inflight.clone()))?;
        let limit_store_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "moodle_edge_ws_limit_store_seconds",
                "Time of each shared rate-limit check in Redis (one round trip).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )?;
        registry.register(Box::new(limit_store_seconds.clone()))?;
        let limit_store_errors = counter(
            "moodle_edge_ws_limit_store_errors_total",
            "Shared rate-limit checks that Redis failed, by kind (error, timeout).",
            &["kind"],
        )?;
        let limit_store_fallbacks = IntCounter::new(
            "moodle_edge_ws_limit_store_fallbacks_total",
            "Times a Redis fault started a fallback to on_store_error.",
        )?;
        registry.register(Box::new(limit_store_fallbacks.clone()))?;
        let limit_store_degraded = IntGauge::new(
            "moodle_edge_ws_limit_store_degraded",
            "1 while shared rate limits follow on_store_error because Redis failed.",
        )?;
        registry.register(Box::new(limit_store_degraded.clone()))?;
        let limit_fallback_checks = counter(
            "moodle_edge_ws_limit_fallback_checks_total",
            "Rate-limit checks decided by on_store_error while Redis was out, by policy.",
            &["policy"],
        )?;
        let breaker_sync = counter(
            "moodle_edge_ws_breaker_sync_total",
            "Breaker state changes sent to or received from other replicas.",
            &["direction"],
        )?;
        let breaker_sync_errors = IntCounter::new(
            "moodle_edge_ws_breaker_sync_errors_total",
            "Breaker state changes that could not be published to or read from Redis.",
        )?;
        registry.register(Box::new(breaker_sync_errors.clone()))?;
        Ok(WebserviceMetrics {
            calls,
            rate_limited,
            policy_refusals,
            breaker_state,
            breaker_transitions,
            concurrency_waits,
            inflight,
            limit_store_seconds,
            limit_store_errors,
            limit_store_fallbacks,
            limit_store_degraded,
            limit_fallback_checks,
            breaker_sync,
            breaker_sync_errors,
            labels: RwLock::new(LabelSet::default()),
        })
    }

    /// Names from config always get their own label (replaces the previous config's set).
    pub fn set_configured_functions<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut set = self.labels.write().unwrap_or_else(|p| p.into_inner());
        set.configured = names.map(str::to_owned).collect();
    }

    /// The label value for a function: the name itself if configured or among the first
    /// [`MAX_FUNCTION_LABELS`] plausible names seen, "other" beyond that, "none" without one.
    pub fn function_label<'a>(&self, function: Option<&'a str>) -> &'a str {
        let Some(f) = function else { return "none" };
        {
            let set = self.labels.read().unwrap_or_else(|p| p.into_inner());
            if set.configured.contains(f) || set.seen.contains(f) {
                return f;
            }
            if !plausible_function(f) || set.seen.len() >= MAX_FUNCTION_LABELS {
                return "other";
            }
        }
        let mut set = self.labels.write().unwrap_or_else(|p| p.into_inner());
        if set.seen.len() < MAX_FUNCTION_LABELS {
            set.seen.insert(f.to_owned());
            f
        } else {
            "other"
        }
    }

    /// Records a breaker's state change (local or applied from another replica): the state
    /// gauge, the transition counter and one warning line.
    pub(crate) fn note_transition(&self, scope: &str, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.breaker_state
                .with_label_values(&[scope])
                .set(t.to.gauge());
            self.breaker_transitions
                .with_label_values(&[scope, t.to.as_str()])
                .inc();
            tracing::warn!(
                scope,
                to = t.to.as_str(),
                "web-service circuit breaker changed state"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_caps_labels() {
        let reg = Registry::new();
        let m = WebserviceMetrics::register(&reg).unwrap();
        assert!(
            WebserviceMetrics::register(&reg).is_err(),
            "once per registry"
        );
        m.set_configured_functions(["Weird-Name"].into_iter());
        assert_eq!(m.function_label(Some("Weird-Name")), "Weird-Name");
        assert_eq!(m.function_label(Some("DROP TABLE")), "other");
        assert_eq!(m.function_label(None), "none");
        for i in 0..MAX_FUNCTION_LABELS {
            let name = format!("f_{i}");
            assert_eq!(m.function_label(Some(&name)), name);
        }
        assert_eq!(m.function_label(Some("one_too_many")), "other");
        assert_eq!(m.function_label(Some("f_7")), "f_7");
        m.calls.with_label_values(&["f_7", "ok"]).inc();
        assert!(reg
            .gather()
            .iter()
            .any(|f| f.name() == "moodle_edge_ws_calls_total"));
    }
}
