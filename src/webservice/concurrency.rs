//! Calls in flight per token, with a bounded wait for a free slot.
//!
//! One `Semaphore` per token in a `DashMap`. A permit holds an `Arc` of its semaphore, so an
//! entry whose `Arc` has no other holder has no permit out and no waiter: only those are pruned
//! (in housekeeping, or at once when the map grows past a bound). A time-based cache could evict
//! a semaphore while a long call still holds a permit and so let a second set of calls in.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Above this many tokens the map is pruned on insert rather than waiting for housekeeping.
const PRUNE_AT: usize = 50_000;

pub(crate) struct ConcurrencyCaps {
    max: u32,
    wait: Duration,
    map: DashMap<String, Arc<Semaphore>>,
}

/// How a slot was obtained, for `concurrency_waits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotWait {
    /// A slot was free at once (not counted as a wait).
    Immediate,
    /// Had to wait, then got one.
    Admitted,
}

impl ConcurrencyCaps {
    /// `max == 0` turns the cap off.
    pub(crate) fn new(max: u32, wait: Duration) -> Self {
        ConcurrencyCaps {
            max,
            wait,
            map: DashMap::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max > 0
    }

    fn semaphore(&self, token: &str) -> Arc<Semaphore> {
        if let Some(s) = self.map.get(token) {
            return s.clone();
        }
        if self.map.len() >= PRUNE_AT {
            self.prune();
        }
        self.map
            .entry(token.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max as usize)))
            .clone()
    }

    /// Takes a slot for `token`, waiting at most the configured time. `Err(())` = none free.
    pub(crate) async fn acquire(
        &self,
        token: &str,
    ) -> Result<(OwnedSemaphorePermit, SlotWait), ()> {
        let sem = self.semaphore(token);
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok((p, SlotWait::Immediate));
        }
        match tokio::time::timeout(self.wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok((p, SlotWait::Admitted)),
            _ => Err(()),
        }
    }

    /// Forgets tokens with no call in flight or waiting.
    pub(crate) fn prune(&self) {
        self.map.retain(|_, s| Arc::strong_count(s) > 1);
        self.map.shrink_to_fit();
    }

    #[cfg(test)]
    pub(crate) fn tokens(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused clock: the 5 ms release and the 30 ms wait run in virtual time, in that order,
    // however loaded the machine.
    #[tokio::test(start_paused = true)]
    async fn cap_wait_and_release() {
        let caps = ConcurrencyCaps::new(2, Duration::from_millis(30));
        let (a, w) = caps.acquire("t").await.unwrap();
        assert_eq!(w, SlotWait::Immediate);
        let (_b, _) = caps.acquire("t").await.unwrap();
        assert!(
            caps.acquire("t").await.is_err(),
            "third waits, then is refused"
        );
        assert!(caps.acquire("u").await.is_ok(), "other tokens are separate");
        // Freed during the wait: admitted.
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(a);
        });
        let (_c, w) = caps.acquire("t").await.unwrap();
        assert_eq!(w, SlotWait::Admitted);
        releaser.await.unwrap();
    }

    #[tokio::test]
    async fn prune_keeps_tokens_in_use() {
        let caps = ConcurrencyCaps::new(1, Duration::from_millis(1));
        let held = caps.acquire("busy").await.unwrap();
        drop(caps.acquire("idle").await.unwrap());
        assert_eq!(caps.tokens(), 2);
        caps.prune();
        assert_eq!(caps.tokens(), 1);
        assert!(
            caps.acquire("busy").await.is_err(),
            "cap still enforced after prune"
        );
        drop(held);
        caps.prune();
        assert_eq!(caps.tokens(), 0);
    }
}
