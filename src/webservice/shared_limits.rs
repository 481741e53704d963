//! Rate limits shared by replicas (`store.backend: redis`): each check is one GCRA script call
//! in Redis (`store::gcra`), with the same rules, buckets and refusals as the local limiter.
//!
//! Order per check: find the buckets the call touches (none: admitted, no round trip); if the
//! store is marked faulty and it is not yet time to retry, decide by `on_store_error` at once;
//! else ask Redis, bounded by `store_timeout`. A fault (error or timeout) marks the store faulty
//! for `retry_store_after` and that call too is decided by `on_store_error`. Once the time has
//! passed, one call (not every call at once) tries Redis again; its success ends the fallback.
//! So a frozen Redis costs one call per `retry_store_after` a wait of `store_timeout`, not every
//! call.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::gcra::GcraVerdict;
use crate::store::RedisStore;
use crate::webservice::config::{AcrossReplicas, OnStoreError};
use crate::webservice::limits::{Limited, RateLimits};
use crate::webservice::metrics::WebserviceMetrics;

/// How a check was decided when Redis could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedRefusal {
    Limited(Limited),
    /// `on_store_error: closed` while Redis is out; retry after this long.
    StoreUnavailable(Duration),
}

pub(crate) struct SharedLimits {
    store: RedisStore,
    policy: OnStoreError,
    timeout: Duration,
    retry_after: Duration,
    health: StoreHealth,
    metrics: Arc<WebserviceMetrics>,
}

/// Whether Redis is believed to answer, and when to try it again.
struct StoreHealth {
    /// Reference point for `retry_at_ms`.
    origin: Instant,
    /// Set on a fault, cleared by the first success: calls follow the policy meanwhile.
    faulty: AtomicBool,
    /// Milliseconds after `origin` before which no call tries Redis.
    retry_at_ms: AtomicU64,
    /// One call at a time tries a faulty Redis; the others keep to the policy.
    probing: AtomicBool,
}

/// Whether this call asks Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Ask,
    /// Asks a store believed faulty: this call is the one probe.
    Probe,
    Fallback,
}

impl StoreHealth {
    fn new() -> Self {
        StoreHealth {
            origin: Instant::now(),
            faulty: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn route(&self) -> Route {
        if !self.faulty.load(Ordering::Acquire) {
            return Route::Ask;
        }
        if self.now_ms() < self.retry_at_ms.load(Ordering::Acquire) {
            return Route::Fallback;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Route::Probe,
            Err(_) => Route::Fallback,
        }
    }

    /// True when this success ended a fault.
    fn succeeded(&self, route: Route) -> bool {
        if route == Route::Probe {
            self.probing.store(false, Ordering::Release);
        }
        self.faulty.swap(false, Ordering::AcqRel)
    }

    /// True when this fault started a fallback (the store was healthy before).
    fn failed(&self, route: Route, retry_after: Duration) -> bool {
        let retry_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        self.retry_at_ms
            .store(self.now_ms().saturating_add(retry_ms), Ordering::Release);
        let started = !self.faulty.swap(true, Ordering::AcqRel);
        if route == Route::Probe {
            self.probing.store(false, Ordering::Release);
        }
        started
    }
}

impl SharedLimits {
    pub(crate) fn new(
        store: RedisStore,
        cfg: &AcrossReplicas,
        metrics: Arc<WebserviceMetrics>,
    ) -> Self {
        metrics.limit_store_degraded.set(0);
        // Connect now, not on the first call: making the connection can take longer than
        // `store_timeout`, and would start this replica on its fallback.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let warm = store.clone();
            runtime.spawn(async move {
                if let Err(e) = warm.ping().await {
                    tracing::warn!(error = %e, "shared rate limits: redis does not answer yet");
                }
            });
        }
        SharedLimits {
            store,
            policy: cfg.on_store_error,
            timeout: cfg.store_timeout.get(),
            retry_after: cfg.retry_store_after.get(),
            health: StoreHealth::new(),
            metrics,
        }
    }

    /// Checks (and counts, in Redis) one call against every rule of `limits` that applies.
    pub(crate) async fn check(
        &self,
        limits: &RateLimits,
        token: Option<&String>,
        function: Option<&String>,
        ip: IpAddr,
    ) -> Result<(), SharedRefusal> {
        let buckets = limits.buckets(token, function, ip);
        if buckets.is_empty() {
            return Ok(());
        }
        let route = self.health.route();
        if route == Route::Fallback {
            return self.fallback(limits, token, function, ip);
        }
        let only: Vec<_> = buckets.iter().map(|(_, b)| b.clone()).collect();
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.store.gcra(&only)).await;
        self.metrics
            .limit_store_seconds
            .observe(started.elapsed().as_secs_f64());
        let fault = match outcome {
            Ok(Ok(verdict)) => {
                if self.health.succeeded(route) {
                    self.metrics.limit_store_degraded.set(0);
                    tracing::info!("shared rate limits: redis answers again");
                }
                return match verdict {
                    GcraVerdict::Allowed => Ok(()),
                    GcraVerdict::Refused { index, retry_after } => {
                        let rule = buckets.get(index).map(|(rule, _)| *rule).unwrap_or(0);
                        Err(SharedRefusal::Limited(limits.refusal(rule, retry_after)))
                    }
                };
            }
            Ok(Err(e)) => ("error", e.to_string()),
            Err(_) => ("timeout", format!("no answer within {:?}", self.timeout)),
        };
        self.metrics
            .limit_store_errors
            .with_label_values(&[fault.0])
            .inc();
        if self.health.failed(route, self.retry_after) {
            self.metrics.limit_store_fallbacks.inc();
            self.metrics.limit_store_degraded.set(1);
            tracing::warn!(
                error = %fault.1,
                policy = self.policy.as_str(),
                "shared rate limits: redis failed; following on_store_error until it answers"
            );
        }
        self.fallback(limits, token, function, ip)
    }

    fn fallback(
        &self,
        limits: &RateLimits,
        token: Option<&String>,
        function: Option<&String>,
        ip: IpAddr,
    ) -> Result<(), SharedRefusal> {
        self.metrics
            .limit_fallback_checks
            .with_label_values(&[self.policy.as_str()])
            .inc();
        match self.policy {
            OnStoreError::Local => limits
                .check(token, function, ip)
                .map_err(SharedRefusal::Limited),
            OnStoreError::Open => Ok(()),
            OnStoreError::Closed => Err(SharedRefusal::StoreUnavailable(self.retry_after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_after_the_retry_time_and_success_ends_the_fault() {
        let h = StoreHealth::new();
        assert_eq!(h.route(), Route::Ask);
        assert!(h.failed(Route::Ask, Duration::ZERO), "fault starts");
        assert!(
            !h.failed(Route::Ask, Duration::ZERO),
            "a second one does not"
        );
        assert_eq!(h.route(), Route::Probe);
        assert_eq!(h.route(), Route::Fallback, "one probe at a time");
        assert!(!h.failed(Route::Probe, Duration::from_secs(3600)));
        assert_eq!(h.route(), Route::Fallback, "not before the retry time");
        h.retry_at_ms.store(0, Ordering::Release);
        assert_eq!(h.route(), Route::Probe);
        assert!(h.succeeded(Route::Probe));
        assert_eq!(h.route(), Route::Ask);
    }
}
