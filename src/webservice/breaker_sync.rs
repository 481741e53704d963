//! The circuit breaker across replicas: each replica counts its own calls, and every state
//! change it makes (open, half-open, closed) is published so the others follow at once.
//!
//! Order of things, in one background task per guard:
//! 1. A local change (from `Guard::admit` or `Admission::finish`, which cannot wait) is queued
//!    here, then published on the `breaker` channel and kept under `breaker:<scope>` for as long
//!    as it lasts (open: `open_for`; half-open: the hold on the probe; closed: the key goes).
//! 2. A change published by another replica is applied with [`Breaker::apply_remote`]; a
//!    replica never re-publishes what it applied, so nothing echoes.
//! 3. When the store's pub/sub epoch moves (the first connection, or a reconnection after a
//!    Redis fault), the kept states are read back and applied: a replica that starts, or missed
//!    messages, picks up the current state. A replica open on its own while Redis was out (the
//!    key is missing) publishes its state again, so the others catch up too.
//!
//! Message and key value: `v1 <replica> <state> <lasts_ms> <scope>`, the scope last because a
//! configured function name may hold any character.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc};

use crate::store::Store;
use crate::webservice::breaker::{
    Breaker, BreakerSettings, BreakerState, Transition, UPSTREAM_SCOPE,
};
use crate::webservice::metrics::WebserviceMetrics;

/// The pub/sub channel (under `store.redis_key_prefix`).
pub(crate) const CHANNEL: &str = "breaker";
/// Per-function breakers made for scopes other replicas name, at most.
const MAX_REMOTE_SCOPES: usize = 1000;

/// A change to publish.
struct Change {
    scope: Arc<str>,
    to: BreakerState,
    lasts: Duration,
}

/// The guard's handle: queues local changes for the task. Cloned into each admission.
#[derive(Clone)]
pub(crate) struct BreakerSync {
    tx: mpsc::UnboundedSender<Change>,
    open_for: Duration,
}

/// What the task works on: the guard's breakers and where to publish.
pub(crate) struct Shared {
    pub store: Store,
    pub upstream: Option<Arc<Breaker>>,
    pub per_function: Option<Arc<DashMap<String, Arc<Breaker>>>>,
    pub settings: BreakerSettings,
    pub metrics: Arc<WebserviceMetrics>,
}

impl BreakerSync {
    /// Starts the task (it ends once the guard and its admissions are gone). None without a
    /// tokio runtime (`moodle-edge check`, unit tests): the breaker then stays local.
    pub(crate) fn start(shared: Shared) -> Option<BreakerSync> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let open_for = shared.settings.open_for;
        let replica = format!("{:016x}", rand::random::<u64>());
        let messages = shared.store.subscribe(CHANNEL);
        runtime.spawn(run(shared, replica, rx, messages));
        Some(BreakerSync { tx, open_for })
    }

    /// Queues a local change for publishing.
    pub(crate) fn changed(&self, scope: &Arc<str>, t: Transition) {
        let lasts = match t.to {
            BreakerState::Closed => Duration::ZERO,
            BreakerState::Open | BreakerState::HalfOpen => self.open_for,
        };
        // The task is gone only when the runtime is shutting down: nothing left to tell.
        let _ = self.tx.send(Change {
            scope: scope.clone(),
            to: t.to,
            lasts,
        });
    }
}

async fn run(
    shared: Shared,
    replica: String,
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut messages: broadcast::Receiver<bytes::Bytes>,
) {
    let mut epochs = shared.store.epochs();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                publish(&shared, &replica, &change).await;
            }
            msg = messages.recv() => match msg {
                Ok(payload) => {
                    if let Some(m) = Message::parse(&payload) {
                        if m.replica != replica {
                            shared.metrics.breaker_sync.with_label_values(&["received"]).inc();
                            apply(&shared, &m.scope, m.to, m.lasts);
                        }
                    }
                }
                // Fell behind: the kept states tell the current word.
                Err(broadcast::error::RecvError::Lagged(_)) => catch_up(&shared, &replica).await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            changed = epochs.changed() => {
                if changed.is_err() {
                    return;
                }
                catch_up(&shared, &replica).await;
            }
        }
    }
}

async fn publish(shared: &Shared, replica: &str, change: &Change) {
    let payload = Message::render(replica, change.to, change.lasts, &change.scope);
    let keep = (change.to != BreakerState::Closed).then_some(change.lasts);
    let key = key(&change.scope);
    match shared
        .store
        .publish_retained(CHANNEL, &key, payload.as_bytes(), keep)
        .await
    {
        Ok(()) => shared
            .metrics
            .breaker_sync
            .with_label_values(&["sent"])
            .inc(),
        Err(e) => {
            shared.metrics.breaker_sync_errors.inc();
            tracing::warn!(error = %e, scope = %change.scope, "cannot publish a breaker change; the other replicas will read it when redis is back");
        }
    }
}

/// Reads the kept state of every scope this replica knows and applies it; republishes an open
/// state of ours that Redis does not hold (it was out when we opened).
async fn catch_up(shared: &Shared, replica: &str) {
    let mut scopes: Vec<(Arc<str>, Arc<Breaker>)> = Vec::new();
    if let Some(b) = &shared.upstream {
        scopes.push((UPSTREAM_SCOPE.into(), b.clone()));
    }
    if let Some(map) = &shared.per_function {
        scopes.extend(
            map.iter()
                .map(|e| (e.key().as_str().into(), e.value().clone())),
        );
    }
    for (scope, breaker) in scopes {
        match shared.store.retained(&key(&scope)).await {
            Ok(Some((payload, left))) => {
                if let Some(m) = Message::parse(&payload) {
                    if m.replica != replica {
                        apply(shared, &scope, m.to, left);
                    }
                }
            }
            Ok(None) => {
                let (state, lasts) = breaker.snapshot(Instant::now());
                if state == BreakerState::Open && !lasts.is_zero() {
                    let change = Change {
                        scope: scope.clone(),
                        to: state,
                        lasts,
                    };
                    publish(shared, replica, &change).await;
                }
            }
            Err(e) => {
                shared.metrics.breaker_sync_errors.inc();
                tracing::warn!(error = %e, "cannot read the breaker state kept in redis");
                return;
            }
        }
    }
}

fn apply(shared: &Shared, scope: &str, to: BreakerState, lasts: Duration) {
    let breaker = if scope == UPSTREAM_SCOPE {
        shared.upstream.clone()
    } else {
        shared.per_function.as_ref().and_then(|map| {
            if let Some(b) = map.get(scope) {
                return Some(b.clone());
            }
            (map.len() < MAX_REMOTE_SCOPES).then(|| {
                map.entry(scope.to_owned())
                    .or_insert_with(|| {
                        Arc::new(Breaker::new(shared.settings.clone(), Instant::now()))
                    })
                    .clone()
            })
        })
    };
    let Some(breaker) = breaker else { return };
    let transition = breaker.apply_remote(to, lasts, Instant::now());
    shared.metrics.note_transition(scope, transition);
}

fn key(scope: &str) -> String {
    format!("{CHANNEL}:{scope}")
}

/// One published change.
#[derive(Debug, PartialEq)]
struct Message {
    replica: String,
    to: BreakerState,
    lasts: Duration,
    scope: String,
}

impl Message {
    fn render(replica: &str, to: BreakerState, lasts: Duration, scope: &str) -> String {
        format!("v1 {replica} {} {} {scope}", to.as_str(), lasts.as_millis())
    }

    /// None for anything else (another version, a stray publisher): ignored.
    fn parse(payload: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.splitn(5, ' ');
        if parts.next()? != "v1" {
            return None;
        }
        let replica = parts.next()?.to_owned();
        let to = match parts.next()? {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            "closed" => BreakerState::Closed,
            _ => return None,
        };
        let lasts = Duration::from_millis(parts.next()?.parse().ok()?);
        let scope = parts.next()?.to_owned();
        (!scope.is_empty()).then_some(Message {
            replica,
            to,
            lasts,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_ignored() {
        let text = Message::render(
            "r1",
            BreakerState::HalfOpen,
            Duration::from_secs(30),
            "odd name",
        );
        assert_eq!(text, "v1 r1 half_open 30000 odd name");
        assert_eq!(
            Message::parse(text.as_bytes()),
            Some(Message {
                replica: "r1".into(),
                to: BreakerState::HalfOpen,
                lasts: Duration::from_secs(30),
                scope: "odd name".into(),
            })
        );
        for junk in [
            &b"v2 r1 open 1 upstream"[..],
            b"v1 r1 ajar 1 upstream",
            b"v1 r1 open x upstream",
            b"v1 r1 open 1",
            b"\xff",
        ] {
            assert_eq!(Message::parse(junk), None);
        }
    }
}
