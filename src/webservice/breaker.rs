//! A circuit breaker over a rolling window, with time passed in so tests can step through it.
//!
//! Closed: calls pass and their results fill a window of ten buckets. It opens when the window
//! holds at least `min_requests` calls and the share of failures reaches `error_rate`, or the
//! share of slow calls reaches `slow_call_rate` (an overloaded Moodle gets slow before it fails,
//! so latency alone may open it). Open: calls are refused until `open_for` has passed. Half-open:
//! exactly one probe goes through; its success (neither failed nor slow) closes the breaker with
//! an empty window, anything else opens it again.
//!
//! Across replicas (`breaker_sync`), a replica applies the state changes others publish
//! ([`Breaker::apply_remote`]): open for the time they have left, closed with an empty window,
//! and half-open as *a probe is out elsewhere*: calls are refused until that probe's result
//! arrives or the hold (`open_for`) ends, then this replica probes for itself.
//!
//! One `std::sync::Mutex` per breaker: every critical section is a few integer updates.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::webservice::config::CircuitBreakerConfig;

const BUCKETS: usize = 10;

/// Scope label of the whole-upstream breaker (per-function breakers are labelled by function).
pub(crate) const UPSTREAM_SCOPE: &str = "upstream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `moodle_edge_ws_breaker_state` gauge.
    pub(crate) fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The settings, checked and converted once.
#[derive(Debug, Clone)]
pub(crate) struct BreakerSettings {
    pub bucket: Duration,
    pub min_requests: u32,
    pub error_rate: f64,
    pub slow_call: Duration,
    pub slow_call_rate: f64,
    pub open_for: Duration,
}

impl BreakerSettings {
    pub(crate) fn from_config(cfg: &CircuitBreakerConfig) -> Result<Self, String> {
        let window = cfg.window.get();
        if window < Duration::from_millis(10) {
            return Err("window: must be at least 10ms".into());
        }
        for (name, v) in [
            ("error_rate", cfg.error_rate),
            ("slow_call_rate", cfg.slow_call_rate),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("{name}: must be above 0 and at most 1, not {v}"));
            }
        }
        Ok(BreakerSettings {
            bucket: window / BUCKETS as u32,
            min_requests: cfg.min_requests.max(1),
            error_rate: cfg.error_rate,
            slow_call: cfg.slow_call_duration.get(),
            slow_call_rate: cfg.slow_call_rate,
            open_for: cfg.open_for.get(),
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_out: bool,
    },
    /// Another replica's probe decides; until `until`, then probe here.
    RemoteProbe {
        until: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    buckets: [Bucket; BUCKETS],
}

/// A state change, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub to: BreakerState,
}

/// Why a call was refused: how long until the breaker will try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerOpen {
    pub retry_after: Duration,
}

/// Proof of admission. `probe` marks the single half-open call whose result decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub probe: bool,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    origin: Instant,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings, now: Instant) -> Self {
        Breaker {
            settings,
            origin: now,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                buckets: [Bucket::default(); BUCKETS],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside these few lines cannot leave the counters inconsistent enough to
        // matter; keep serving rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        (since.as_nanos() / self.settings.bucket.as_nanos().max(1)) as u64
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } | Phase::RemoteProbe { .. } => BreakerState::HalfOpen,
        }
    }

    /// The state and, when open or waiting on another replica's probe, how long it lasts.
    pub(crate) fn snapshot(&self, now: Instant) -> (BreakerState, Duration) {
        match self.lock().phase {
            Phase::Closed => (BreakerState::Closed, Duration::ZERO),
            Phase::Open { until } => (BreakerState::Open, until.saturating_duration_since(now)),
            Phase::HalfOpen { .. } => (BreakerState::HalfOpen, self.settings.open_for),
            Phase::RemoteProbe { until } => {
                (BreakerState::HalfOpen, until.saturating_duration_since(now))
            }
        }
    }

    /// Applies a state another replica published; `lasts` is what it has left (open) or the
    /// hold on its probe (half-open). Reported like a local change; never published again.
    pub(crate) fn apply_remote(
        &self,
        to: BreakerState,
        lasts: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let next = match (to, &inner.phase) {
            // Already open here: keep this replica's own timing.
            (BreakerState::Open, Phase::Open { .. }) => None,
            (BreakerState::Open, _) => Some(Phase::Open { until: now + lasts }),
            (BreakerState::Closed, Phase::Closed) => None,
            (BreakerState::Closed, _) => {
                inner.buckets = [Bucket::default(); BUCKETS];
                Some(Phase::Closed)
            }
            // This replica's own probe is out: its result will be published too.
            (BreakerState::HalfOpen, Phase::HalfOpen { probe_out: true }) => None,
            (BreakerState::HalfOpen, _) => Some(Phase::RemoteProbe { until: now + lasts }),
        };
        let next = next?;
        let before = phase_state(&inner.phase);
        inner.phase = next;
        let after = phase_state(&inner.phase);
        (before != after).then_some(Transition { to: after })
    }

    /// Asks to let one call through at `now`. May move Open to HalfOpen (reported).
    pub(crate) fn admit(&self, now: Instant) -> (Result<Ticket, BreakerOpen>, Option<Transition>) {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => (Ok(Ticket { probe: false }), None),
            Phase::Open { until } if now < until => (
                Err(BreakerOpen {
                    retry_after: until - now,
                }),
                None,
            ),
            Phase::RemoteProbe { until } if now < until => (
                Err(BreakerOpen {
                    retry_after: Duration::from_secs(1),
                }),
                None,
            ),
            // Another replica's probe never told: probe here (already half-open: not reported).
            Phase::RemoteProbe { .. } => {
                inner.phase = Phase::HalfOpen { probe_out: true };
                (Ok(Ticket { probe: true }), None)
            }
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen { probe_out: true };
                (
                    Ok(Ticket { probe: true }),
                    Some(Transition {
                        to: BreakerState::HalfOpen,
                    }),
                )
            }
            Phase::HalfOpen { probe_out: false } => {
                inner.phase = Phase::HalfOpen { probe_out: true };
                (Ok(Ticket { probe: true }), None)
            }
            // The probe is out: its result will tell. Ask again in a second.
            Phase::HalfOpen { probe_out: true } => (
                Err(BreakerOpen {
                    retry_after: Duration::from_secs(1),
                }),
                None,
            ),
        }
    }

    /// Records a finished call. `failed` per `OutcomeClass::counts_as_failure`; slowness is
    /// judged here from `duration`.
    pub(crate) fn record(
        &self,
        ticket: Ticket,
        failed: bool,
        duration: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let slow = duration >= self.settings.slow_call;
        let epoch = self.epoch(now);
        let mut inner = self.lock();
        match inner.phase {
            Phase::HalfOpen { .. } if ticket.probe => {
                if failed || slow {
                    inner.phase = Phase::Open {
                        until: now + self.settings.open_for,
                    };
                    Some(Transition {
                        to: BreakerState::Open,
                    })
                } else {
                    inner.phase = Phase::Closed;
                    inner.buckets = [Bucket::default(); BUCKETS];
                    Some(Transition {
                        to: BreakerState::Closed,
                    })
                }
            }
            // Late results of calls let through before the breaker opened say nothing new.
            Phase::Open { .. } | Phase::HalfOpen { .. } | Phase::RemoteProbe { .. } => None,
            Phase::Closed => {
                let bucket = &mut inner.buckets[(epoch % BUCKETS as u64) as usize];
                if bucket.epoch != epoch {
                    *bucket = Bucket {
                        epoch,
                        ..Bucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(failed);
                bucket.slow += u32::from(slow);
                let (calls, failures, slow_calls) = totals(&inner.buckets, epoch);
                let s = &self.settings;
                let trips = calls >= u64::from(s.min_requests)
                    && (failures as f64 / calls as f64 >= s.error_rate
                        || slow_calls as f64 / calls as f64 >= s.slow_call_rate);
                if trips {
                    inner.phase = Phase::Open {
                        until: now + s.open_for,
                    };
                    Some(Transition {
                        to: BreakerState::Open,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// The probe's call ended without a result (client went away, cancelled): let another try.
    pub(crate) fn release_probe(&self) {
        let mut inner = self.lock();
        if let Phase::HalfOpen { probe_out: true } = inner.phase {
            inner.phase = Phase::HalfOpen { probe_out: false };
        }
    }

    /// Closed and nothing in the window: a per-function breaker in this state can be dropped.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let inner = self.lock();
        matches!(inner.phase, Phase::Closed) && totals(&inner.buckets, epoch).0 == 0
    }
}

fn phase_state(phase: &Phase) -> BreakerState {
    match phase {
        Phase::Closed => BreakerState::Closed,
        Phase::Open { .. } => BreakerState::Open,
        Phase::HalfOpen { .. } | Phase::RemoteProbe { .. } => BreakerState::HalfOpen,
    }
}

fn totals(buckets: &[Bucket; BUCKETS], epoch: u64) -> (u64, u64, u64) {
    let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
    buckets
        .iter()
        .filter(|b| b.calls > 0 && b.epoch >= oldest && b.epoch <= epoch)
        .fold((0, 0, 0), |(c, f, s), b| {
            (
                c + u64::from(b.calls),
                f + u64::from(b.failures),
                s + u64::from(b.slow),
            )
        })
}

/// Whole seconds to put in Retry-After: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            bucket: Duration::from_secs(1),
            min_requests: 10,
            error_rate: 0.5,
            slow_call: Duration::from_secs(2),
            slow_call_rate: 0.5,
            open_for: Duration::from_secs(30),
        }
    }
    const FAST: Duration = Duration::from_millis(50);
    const SLOW: Duration = Duration::from_secs(3);

    fn call(b: &Breaker, failed: bool, d: Duration, now: Instant) -> Option<Transition> {
        let (t, _) = b.admit(now);
        b.record(t.unwrap(), failed, d, now)
    }

    #[test]
    fn opens_on_latency_alone() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        for i in 0..9 {
            assert_eq!(
                call(&b, false, SLOW, t0 + Duration::from_millis(i * 100)),
                None
            );
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min_requests");
        let tr = call(&b, false, SLOW, t0 + Duration::from_secs(1));
        assert_eq!(
            tr,
            Some(Transition {
                to: BreakerState::Open
            })
        );
        let (r, _) = b.admit(t0 + Duration::from_secs(11));
        assert_eq!(
            r,
            Err(BreakerOpen {
                retry_after: Duration::from_secs(20)
            })
        );
    }

    #[test]
    fn opens_on_errors_not_on_healthy_traffic() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        for _ in 0..6 {
            call(&b, false, FAST, t0);
        }
        for _ in 0..4 {
            call(&b, true, FAST, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed, "4/10 < 0.5");
        assert!(call(&b, true, FAST, t0).is_none(), "5/11 < 0.5");
        assert_eq!(
            call(&b, true, FAST, t0),
            Some(Transition {
                to: BreakerState::Open
            })
        );
    }

    #[test]
    fn old_buckets_fall_out_of_the_window() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        for _ in 0..9 {
            call(&b, true, FAST, t0);
        }
        // Eleven seconds later those failures are outside the 10 s window.
        let later = t0 + Duration::from_secs(11);
        for _ in 0..9 {
            call(&b, false, FAST, later);
        }
        assert_eq!(call(&b, true, FAST, later), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_single_probe_then_close() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        for _ in 0..10 {
            call(&b, true, FAST, t0);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let t1 = t0 + Duration::from_secs(30);
        let (probe, tr) = b.admit(t1);
        assert_eq!(
            tr,
            Some(Transition {
                to: BreakerState::HalfOpen
            })
        );
        let probe = probe.unwrap();
        assert!(probe.probe);
        assert!(b.admit(t1).0.is_err(), "only one probe");
        // A late result from before the opening changes nothing.
        assert_eq!(b.record(Ticket { probe: false }, false, FAST, t1), None);
        assert_eq!(
            b.record(probe, false, FAST, t1),
            Some(Transition {
                to: BreakerState::Closed
            })
        );
        assert!(b.is_idle(t1), "window reset on close");
    }

    #[test]
    fn slow_or_failed_probe_reopens_and_lost_probe_is_replaced() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        for _ in 0..10 {
            call(&b, false, SLOW, t0);
        }
        let t1 = t0 + Duration::from_secs(31);
        let probe = b.admit(t1).0.unwrap();
        assert_eq!(
            b.record(probe, false, SLOW, t1),
            Some(Transition {
                to: BreakerState::Open
            })
        );
        let t2 = t1 + Duration::from_secs(30);
        let probe = b.admit(t2).0.unwrap();
        b.release_probe();
        let again = b.admit(t2).0.unwrap();
        assert!(again.probe);
        assert_eq!(
            b.record(again, true, FAST, t2),
            Some(Transition {
                to: BreakerState::Open
            })
        );
        let _ = probe;
    }

    #[test]
    fn remote_changes_open_hold_and_close() {
        let t0 = Instant::now();
        let b = Breaker::new(settings(), t0);
        let open = b.apply_remote(BreakerState::Open, Duration::from_secs(10), t0);
        assert_eq!(
            open,
            Some(Transition {
                to: BreakerState::Open
            })
        );
        assert!(b.admit(t0 + Duration::from_secs(9)).0.is_err());
        assert_eq!(
            b.apply_remote(BreakerState::Open, Duration::from_secs(99), t0),
            None,
            "already open: own timing kept"
        );
        // Another replica's probe is out: refuse here until the hold ends, then probe here.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            b.apply_remote(BreakerState::HalfOpen, Duration::from_secs(5), t1),
            Some(Transition {
                to: BreakerState::HalfOpen
            })
        );
        assert!(b.admit(t1).0.is_err(), "the other replica probes");
        let (probe, tr) = b.admit(t1 + Duration::from_secs(5));
        assert!(probe.unwrap().probe, "hold over: probe here");
        assert_eq!(tr, None, "was half-open already");
        // Our probe is out: a remote half-open changes nothing; a remote close closes.
        assert_eq!(
            b.apply_remote(BreakerState::HalfOpen, Duration::from_secs(5), t1),
            None
        );
        assert_eq!(
            b.apply_remote(BreakerState::Closed, Duration::ZERO, t1),
            Some(Transition {
                to: BreakerState::Closed
            })
        );
        assert_eq!(b.snapshot(t1), (BreakerState::Closed, Duration::ZERO));
        assert!(b.admit(t1).0.is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
