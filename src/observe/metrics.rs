//! Prometheus metrics. Built once per process and kept across config reloads (a reload swaps
//! the state, never the registry, so counters do not reset).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The proxy core's metrics. Modules with metrics of their own (sendfile, webservice) register
/// theirs into the same registry.
pub struct CoreMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// `request_duration` per route, resolved once (indexed by `Route::index`).
    pub route_duration: Vec<Histogram>,
    pub in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub upstream_connect: Histogram,
    pub upstream_response: Histogram,
    pub upstream_up: IntGauge,
    pub connections_open: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub rejected_requests: IntCounterVec,
    pub log_lines_dropped: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl CoreMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            c: T,
        ) -> Result<T, prometheus::Error> {
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                "moodle_edge_build_info",
                "Always 1; labels say which build runs.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;

        let request_duration = reg(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "moodle_edge_request_duration_seconds",
                    "Time from request head to the response head, by route class.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        let route_duration = crate::route::ROUTE_LABELS
            .iter()
            .map(|label| request_duration.with_label_values(&[label]))
            .collect();
        Ok(CoreMetrics {
            request_duration,
            route_duration,
            requests: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("moodle_edge_requests_total", "Requests answered, by route class and HTTP status."),
                    &["route", "status"],
                )?,
            )?,
            in_flight: reg(
                registry,
                IntGauge::new("moodle_edge_requests_in_flight", "Requests being handled now (until their body is sent).")?,
            )?,
            upstream_errors: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "moodle_edge_upstream_errors_total",
                        "Failed upstream exchanges, by kind (connect, timeout, protocol, body_timeout).",
                    ),
                    &["kind"],
                )?,
            )?,
            upstream_connect: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "moodle_edge_upstream_connect_seconds",
                        "Time to open a new upstream connection (pooled reuse is not counted).",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            )?,
            upstream_response: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "moodle_edge_upstream_response_seconds",
                        "Time from sending the request upstream to its response head.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            )?,
            upstream_up: reg(
                registry,
                IntGauge::new("moodle_edge_upstream_up", "1 when the last upstream health probe was answered.")?,
            )?,
            connections_open: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new("moodle_edge_connections_open", "Open client connections, by listener address."),
                    &["listener"],
                )?,
            )?,
            connections_total: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("moodle_edge_connections_total", "Client connections accepted, by listener address."),
                    &["listener"],
                )?,
            )?,
            connections_rejected: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "moodle_edge_connection_errors_total",
                        "Client connections that ended in an error, by reason (header_timeout, protocol, io).",
                    ),
                    &["reason"],
                )?,
            )?,
            tls_handshake_failures: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("moodle_edge_tls_handshake_failures_total", "TLS handshakes that failed, by listener."),
                    &["listener"],
                )?,
            )?,
            config_reloads: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("moodle_edge_config_reloads_total", "Config reloads (SIGHUP), by result (ok, error)."),
                    &["result"],
                )?,
            )?,
            rejected_requests: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "moodle_edge_rejected_requests_total",
                        "Requests refused before forwarding, by reason (smuggling, body_too_large, bad_host, internal_path, ...).",
                    ),
                    &["reason"],
                )?,
            )?,
            log_lines_dropped: reg(
                registry,
                IntGauge::new(
                    "moodle_edge_log_lines_dropped",
                    "Access and audit log lines dropped because the writer could not keep up.",
                )?,
            )?,
        })
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    let mut out = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}
