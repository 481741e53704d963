//! The log stage and everything an operator watches: Prometheus metrics, health and readiness,
//! access and audit logs with secrets redacted.

pub(crate) mod access_line;
pub(crate) mod access_log;
pub(crate) mod config;
pub(crate) mod event_log;
pub(crate) mod health;
pub(crate) mod json_line;
pub(crate) mod log_stage;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub(crate) mod redact;
pub(crate) mod sink;
