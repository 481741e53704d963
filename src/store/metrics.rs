//! Store metrics: round trips and errors by operation, fallbacks by use, the session cache's
//! hits and misses, and the active sessions. Labels are fixed words only.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub struct StoreMetrics {
    /// Seconds per Redis operation (`op` = get, set, set_if_absent, delete, members_add,
    /// members, members_remove, ping, publish, scan).
    round_trip: HistogramVec,
    /// Failed Redis operations (errors and timeouts), by `op`.
    errors: IntCounterVec,
    /// Requests handled by the fault policy instead of the store, by `use`.
    fallbacks: IntCounterVec,
    /// Session lookups answered by this replica's cache (`result` = hit | miss).
    session_cache: IntCounterVec,
    /// Its two series, resolved once: every checked request counts one.
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    /// Sessions alive in the store (counted every few seconds, shared across replicas).
    active_sessions: IntGauge,
}

impl StoreMetrics {
    /// Metrics in a registry of their own: what a store built outside a running proxy
    /// (tests, benches) records into.
    pub fn unregistered() -> Result<StoreMetrics, prometheus::Error> {
        Self::build()
    }

    pub fn register(registry: &Registry) -> Result<StoreMetrics, prometheus::Error> {
        let m = Self::build()?;
        registry.register(Box::new(m.round_trip.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.fallbacks.clone()))?;
        registry.register(Box::new(m.session_cache.clone()))?;
        registry.register(Box::new(m.active_sessions.clone()))?;
        Ok(m)
    }

    fn build() -> Result<StoreMetrics, prometheus::Error> {
        let session_cache = IntCounterVec::new(
            Opts::new(
                "moodle_edge_session_cache_total",
                "Session lookups by this replica's cache in front of the store (hit, miss)",
            ),
            &["result"],
        )?;
        Ok(StoreMetrics {
            cache_hit: session_cache.get_metric_with_label_values(&["hit"])?,
            cache_miss: session_cache.get_metric_with_label_values(&["miss"])?,
            session_cache,
            round_trip: HistogramVec::new(
                HistogramOpts::new(
                    "moodle_edge_store_round_trip_seconds",
                    "Time per shared-store (Redis) operation, by operation",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
                &["op"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "moodle_edge_store_errors_total",
                    "Failed shared-store operations (errors and timeouts), by operation",
                ),
                &["op"],
            )?,
            fallbacks: IntCounterVec::new(
                Opts::new(
                    "moodle_edge_store_fallbacks_total",
                    "Requests the store fault policy answered while the store failed, by use and action",
                ),
                &["use", "action"],
            )?,
            active_sessions: IntGauge::new(
                "moodle_edge_sso_active_sessions",
                "Edge sessions alive in the store (all replicas), counted every 15s",
            )?,
        })
    }

    pub(crate) fn round_trip(&self, op: &str, took: Duration, ok: bool) {
        self.round_trip
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.with_label_values(&[op]).inc();
        }
    }

    pub(crate) fn fallback(&self, usage: &str, action: &str) {
        self.fallbacks.with_label_values(&[usage, action]).inc();
    }

    pub(crate) fn cache(&self, hit: bool) {
        if hit {
            self.cache_hit.inc();
        } else {
            self.cache_miss.inc();
        }
    }

    pub(crate) fn set_active_sessions(&self, n: u64) {
        self.active_sessions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
