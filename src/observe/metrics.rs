//! Prometheus metrics. Built once per process and kept across config reloads (a reload swaps
//! the state, never the registry, so counters do not reset).

use std::sync::OnceLock;

use crate::route::{Route, ROUTE_LABELS};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The proxy core's metrics. Modules with metrics of their own (sendfile, webservice) register
/// theirs into the same registry.
pub struct CoreMetrics {
    pub requests: IntCounterVec,
    /// `requests` children by (route, status), resolved on first use: a labelled lookup hashes
    /// both labels under a lock, and this runs once per request.
    request_counters: Vec<OnceLock<IntCounter>>,
    pub request_duration: HistogramVec,
    /// `request_duration` per route, resolved once (indexed by `Route::index`).
    pub route_duration: Vec<Histogram>,
    pub in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub upstream_connect: Histogram,
    pub upstream_response: Histogram,
    pub upstream_retries: IntCounter,
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
        let route_duration = ROUTE_LABELS
            .iter()
            .map(|label| request_duration.with_label_values(&[label]))
            .collect();
        Ok(CoreMetrics {
            request_counters: (0..ROUTE_LABELS.len() * STATUS_LABELS.len())
                .map(|_| OnceLock::new())
                .collect(),
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
                        "Failed upstream exchanges, by kind (connect, timeout, protocol).",
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
            upstream_retries: reg(
                registry,
                IntCounter::new(
                    "moodle_edge_upstream_retries_total",
                    "Requests sent again on a new connection because the pooled one they were sent on had been closed by the upstream before it answered (direct path, safe methods only).",
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
                        "Client connections that ended in an error, by reason (header_timeout, protocol, incomplete, io).",
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

impl CoreMetrics {
    /// Counts one answered request in `moodle_edge_requests_total`.
    pub fn count_request(&self, route: Route, status: u16) {
        let (slot, label) = status_slot(status);
        let cached = self
            .request_counters
            .get(route.index() * STATUS_LABELS.len() + slot);
        match cached {
            Some(cell) => cell
                .get_or_init(|| self.requests.with_label_values(&[route.label(), label]))
                .inc(),
            None => self
                .requests
                .with_label_values(&[route.label(), label])
                .inc(),
        }
    }
}

/// Status labels: the codes a proxy in front of Moodle commonly answers, then classes.
const STATUS_LABELS: [&str; 31] = [
    "101", "200", "204", "206", "301", "302", "303", "304", "307", "308", "400", "401", "403",
    "404", "405", "408", "412", "413", "416", "429", "431", "499", "500", "502", "503", "504",
    "1xx", "2xx", "3xx", "4xx", "5xx",
];

/// The label of a status code and its index in `STATUS_LABELS`.
fn status_slot(status: u16) -> (usize, &'static str) {
    let exact = match status {
        101 => Some(0),
        200 => Some(1),
        204 => Some(2),
        206 => Some(3),
        301 => Some(4),
        302 => Some(5),
        303 => Some(6),
        304 => Some(7),
        307 => Some(8),
        308 => Some(9),
        400 => Some(10),
        401 => Some(11),
        403 => Some(12),
        404 => Some(13),
        405 => Some(14),
        408 => Some(15),
        412 => Some(16),
        413 => Some(17),
        416 => Some(18),
        429 => Some(19),
        431 => Some(20),
        499 => Some(21),
        500 => Some(22),
        502 => Some(23),
        503 => Some(24),
        504 => Some(25),
        _ => None,
    };
    let slot = exact.unwrap_or(match status {
        s if s < 200 => 26,
        s if s < 300 => 27,
        s if s < 400 => 28,
        s if s < 500 => 29,
        _ => 30,
    });
    (slot, STATUS_LABELS[slot])
}

/// Renders the registry in the Prometheus text format.
pub(crate) fn render(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    let mut out = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_slots_match_their_labels() {
        for code in [101u16, 200, 206, 304, 404, 413, 429, 431, 499, 502, 504] {
            assert_eq!(status_slot(code).1, code.to_string());
        }
        assert_eq!(status_slot(201).1, "2xx");
        assert_eq!(status_slot(418).1, "4xx");
        assert_eq!(status_slot(599).1, "5xx");
        assert_eq!(status_slot(102).1, "1xx");
    }

    #[test]
    fn counted_requests_reach_the_registry() {
        let registry = Registry::new();
        let m = CoreMetrics::register(&registry).unwrap();
        let ws = Route::WebService(crate::webservice::entry::EntryKind::Rest);
        m.count_request(Route::Page, 200);
        m.count_request(Route::Page, 200);
        m.count_request(ws, 429);
        m.count_request(Route::Page, 418);
        let text = String::from_utf8(render(&registry).unwrap()).unwrap();
        assert!(
            text.contains(r#"moodle_edge_requests_total{route="page",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"moodle_edge_requests_total{route="webservice",status="429"} 1"#));
        assert!(text.contains(r#"moodle_edge_requests_total{route="page",status="4xx"} 1"#));
    }
}
