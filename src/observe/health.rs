//! Liveness and readiness. `/healthz` says the process answers; `/readyz` says a load balancer
//! may send traffic: the upstream answered a recent probe, the dataroot is readable and the
//! store answers.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// When the upstream last answered a probe, in milliseconds since the epoch (0: never).
/// Shared by the prober task and the readiness handler, and kept across reloads.
#[derive(Default)]
pub struct UpstreamHealth {
    last_ok_ms: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl UpstreamHealth {
    pub fn record_ok(&self) {
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    pub fn record_error(&self, why: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }

    /// Up when a probe succeeded within `freshness` and none failed since.
    pub fn check(&self, freshness: Duration) -> Result<(), String> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let last_error = self.last_error.lock().ok().and_then(|e| e.clone());
        if let Some(err) = last_error {
            return Err(err);
        }
        if last == 0 {
            return Err("no upstream probe has succeeded yet".into());
        }
        let age = now_ms().saturating_sub(last);
        if age > freshness.as_millis() as u64 {
            return Err(format!("last successful upstream probe was {age} ms ago"));
        }
        Ok(())
    }
}

/// Reads one directory entry: proves the dataroot is mounted and readable.
pub(crate) fn check_dataroot(dataroot: &Path) -> Result<(), String> {
    std::fs::read_dir(dataroot)
        .map(|_| ())
        .map_err(|e| format!("dataroot {} is not readable: {e}", dataroot.display()))
}

#[derive(Serialize)]
pub(crate) struct Readiness {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
    /// Not failures, but due soon (e.g. an MNet certificate near its expiry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    pub(crate) fn from_checks(checks: Vec<(&'static str, Result<(), String>)>) -> Self {
        let checks: Vec<CheckResult> = checks
            .into_iter()
            .map(|(name, r)| CheckResult {
                name,
                ok: r.is_ok(),
                error: r.err(),
            })
            .collect();
        Readiness {
            ready: checks.iter().all(|c| c.ok),
            checks,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_health_needs_a_fresh_success() {
        let h = UpstreamHealth::default();
        assert!(h.check(Duration::from_secs(10)).is_err());
        h.record_ok();
        assert!(h.check(Duration::from_secs(10)).is_ok());
        h.record_error("connection refused".into());
        assert_eq!(
            h.check(Duration::from_secs(10)).unwrap_err(),
            "connection refused"
        );
        h.record_ok();
        assert!(h.check(Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn readiness_lists_failing_checks() {
        let r = Readiness::from_checks(vec![("upstream", Ok(())), ("store", Err("down".into()))]);
        assert!(!r.ready);
        assert_eq!(r.checks[1].error.as_deref(), Some("down"));
    }
}
