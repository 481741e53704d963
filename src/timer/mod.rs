//! A timer for deadlines that only move later: the per-connection header-read deadline
//! (`head_clock`) and response deadline (`response_timer`).
//!
//! Each request on a keep-alive connection gives such a deadline a new, later value. Moving a
//! tokio `Sleep` and polling it again each time costs two trips into tokio's timer (about 230
//! instructions per request, measured with `bench/instructions.sh`). A [`LaterSleep`] stays
//! registered for the deadline it was armed with, which is earlier than or equal to the one
//! asked for; a request on the same task leaves it alone. When it fires early (at an earlier
//! request's deadline) it is moved to the current one and waits again, so it fires at most
//! once per timeout span and never lets a deadline pass unnoticed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

pub(crate) mod head_clock;
pub(crate) mod response_timer;

/// A `Sleep` reused across deadlines that move later; see the module docs.
pub(crate) struct LaterSleep {
    sleep: Pin<Box<Sleep>>,
    /// The waker the sleep was last polled with; None when it must be polled again before it
    /// can wake anyone (new, or moved).
    waker: Option<Waker>,
}

impl std::fmt::Debug for LaterSleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaterSleep")
            .field("armed", &self.armed())
            .finish()
    }
}

impl LaterSleep {
    pub(crate) fn new(deadline: Instant) -> Self {
        LaterSleep {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            waker: None,
        }
    }

    /// The deadline the sleep is armed for (at or before any deadline it has been asked for).
    pub(crate) fn armed(&self) -> Instant {
        self.sleep.deadline()
    }

    /// Ready once `deadline` has passed; otherwise makes sure `cx`'s task is woken by then
    /// (perhaps earlier, at an earlier deadline the sleep is still armed for).
    pub(crate) fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let armed = self.armed();
            if armed > deadline {
                // Armed for later than allowed (the deadline moved earlier: a reload shortened
                // the timeout).
                self.move_to(deadline);
            } else if self.sleep.is_elapsed() {
                if armed == deadline {
                    return Poll::Ready(());
                }
                // An earlier deadline passed: wait for this one.
                self.move_to(deadline);
            }
            if self
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                // Registered, armed no later than `deadline`, and it wakes this task.
                return Poll::Pending;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                // Fired: at this deadline (done) or an earlier one (moved on by the loop).
                Poll::Ready(()) => {
                    if self.armed() == deadline {
                        return Poll::Ready(());
                    }
                }
            }
        }
    }

    fn move_to(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wait(sleep: &mut LaterSleep, deadline: Instant) {
        std::future::poll_fn(|cx| sleep.poll_until(deadline, cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_asked_for_not_the_one_armed() {
        let start = Instant::now();
        let mut sleep = LaterSleep::new(start + Duration::from_secs(10));
        // Armed for t=10 s, asked for t=25 s: it must not end at 10 s.
        wait(&mut sleep, start + Duration::from_secs(25)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        // A deadline already passed ends at once.
        wait(&mut sleep, start + Duration::from_secs(20)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_leaves_the_sleep_armed_and_an_earlier_one_moves_it() {
        let start = Instant::now();
        let mut sleep = LaterSleep::new(start + Duration::from_secs(10));
        let later = start + Duration::from_secs(30);
        let pending = std::future::poll_fn(|cx| Poll::Ready(sleep.poll_until(later, cx))).await;
        assert!(pending.is_pending());
        assert_eq!(sleep.armed(), start + Duration::from_secs(10));
        let earlier = start + Duration::from_secs(5);
        let pending = std::future::poll_fn(|cx| Poll::Ready(sleep.poll_until(earlier, cx))).await;
        assert!(pending.is_pending());
        assert_eq!(sleep.armed(), earlier);
        wait(&mut sleep, earlier).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_a_task_that_polled_it_once() {
        let start = Instant::now();
        let mut sleep = LaterSleep::new(start + Duration::from_secs(1));
        // The same task asks for later and later deadlines without the sleep being polled
        // again; the final one must still wake it.
        let mut deadline = start;
        for _ in 0..10 {
            deadline += Duration::from_secs(2);
            let p = std::future::poll_fn(|cx| Poll::Ready(sleep.poll_until(deadline, cx))).await;
            assert!(p.is_pending());
        }
        wait(&mut sleep, deadline).await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }
}
