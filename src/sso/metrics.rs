//! SSO metrics: logins by provider, tenant and result; failures by reason; sessions ended by
//! logout messages. Labels are config ids and fixed words only (low cardinality, no personal
//! data).

use prometheus::{IntCounterVec, Opts, Registry};

use super::failure::FailureReason;

pub struct SsoMetrics {
    /// `result` = ok | failed.
    logins: IntCounterVec,
    /// Why logins failed, per provider.
    failures: IntCounterVec,
    /// Sessions ended by a provider's logout message (back-channel, SAML SLO) or at the edge.
    logouts: IntCounterVec,
}

impl SsoMetrics {
    pub fn register(registry: &Registry) -> Result<SsoMetrics, prometheus::Error> {
        let logins = IntCounterVec::new(
            Opts::new(
                "moodle_edge_sso_logins_total",
                "SSO logins by provider, tenant and result",
            ),
            &["provider", "tenant", "result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "moodle_edge_sso_login_failures_total",
                "Refused SSO logins by provider and reason",
            ),
            &["provider", "reason"],
        )?;
        let logouts = IntCounterVec::new(
            Opts::new(
                "moodle_edge_sso_logouts_total",
                "Edge sessions ended, by provider and how (edge, moodle, backchannel, saml_slo)",
            ),
            &["provider", "how"],
        )?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(logouts.clone()))?;
        Ok(SsoMetrics {
            logins,
            failures,
            logouts,
        })
    }

    pub(crate) fn login_ok(&self, provider: &str, tenant: Option<&str>) {
        self.logins
            .with_label_values(&[provider, tenant.unwrap_or("-"), "ok"])
            .inc();
    }

    pub(crate) fn login_failed(&self, provider: &str, tenant: Option<&str>, reason: FailureReason) {
        self.logins
            .with_label_values(&[provider, tenant.unwrap_or("-"), "failed"])
            .inc();
        self.failures
            .with_label_values(&[provider, reason.label()])
            .inc();
    }

    pub(crate) fn logout(&self, provider: &str, how: &str, n: usize) {
        self.logouts
            .with_label_values(&[provider, how])
            .inc_by(n as u64);
    }

    pub(crate) fn sessions_ended_by_protocol(&self, provider: &str, n: usize) {
        self.logout(provider, "protocol", n);
    }
}
