//! The log stage and everything an operator watches: Prometheus metrics, health and readiness,
//! access and audit logs with secrets redacted.

pub mod access_line;
pub mod access_log;
pub mod config;
pub mod event_log;
pub mod health;
pub mod log_stage;
pub mod metrics;
pub mod readiness;
pub mod redact;
pub mod sink;
