//! A connection's reusable upstream response deadline (see the module above): one
//! [`LaterSleep`] per connection instead of a timer registered and cancelled per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::LaterSleep;

/// A connection's reusable upstream response timer. An HTTP/1.1 connection carries one request
/// at a time, and each request's deadline is later than the last, so one [`LaterSleep`]
/// serves all of them (see src/timer.rs), where `tokio::time::timeout` would register and
/// cancel a timer per request. A request that finds it taken (HTTP/2 streams in parallel)
/// uses one of its own.
#[derive(Default)]
pub struct ResponseTimer(std::sync::Mutex<Option<Box<LaterSleep>>>);

impl std::fmt::Debug for ResponseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseTimer")
    }
}

impl ResponseTimer {
    /// Runs `exchange` with a deadline; the output is None when the deadline passed first.
    ///
    /// A plain future rather than an `async fn`: an async fn would keep `exchange` twice (as
    /// its argument and as the pinned local it polls) plus a fallback `Timeout` around it, and
    /// every request's future carries this one.
    pub(crate) fn run<F: Future>(&self, deadline: Instant, exchange: F) -> Deadline<'_, F> {
        // The slot is lent to the request and comes back when its future is dropped; the lock
        // is held for the loan and the return only, never across an await.
        let slot = self.0.lock().ok().and_then(|mut slot| slot.take());
        Deadline {
            exchange,
            owner: self,
            slot,
            deadline: tokio::time::Instant::from_std(deadline),
        }
    }

    fn give_back(&self, slot: Box<LaterSleep>) {
        if let Ok(mut held) = self.0.lock() {
            if held.is_none() {
                *held = Some(slot);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `exchange`, or None once the deadline has passed.
    pub(crate) struct Deadline<'a, F> {
        #[pin]
        exchange: F,
        owner: &'a ResponseTimer,
        // The connection's sleep while this request has it; a sleep of its own when it was
        // taken (made on the first wait).
        slot: Option<Box<LaterSleep>>,
        deadline: tokio::time::Instant,
    }

    impl<'a, F> PinnedDrop for Deadline<'a, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(slot) = this.slot.take() {
                this.owner.give_back(slot);
            }
        }
    }
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The exchange first: an answer that is ready counts even at the deadline.
        if let Poll::Ready(out) = this.exchange.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let deadline = *this.deadline;
        let slot = this
            .slot
            .get_or_insert_with(|| Box::new(LaterSleep::new(deadline)));
        match slot.poll_until(deadline, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The paused test clock's now (std's clock does not move with it).
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_times_out_and_serves_the_next_request() {
        let timer = ResponseTimer::default();
        // An answer in time.
        let quick = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            })
            .await;
        assert_eq!(quick, Some(7));
        // Too slow: the deadline wins.
        let started = tokio::time::Instant::now();
        let slow = timer
            .run(now() + Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
            .await;
        assert_eq!(slow, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // After a timeout the timer still serves the next request with its new deadline.
        let again = timer
            .run(now() + Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                8
            })
            .await;
        assert_eq!(again, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_armed_for_an_earlier_deadline_moves_on_to_the_current_one() {
        let timer = ResponseTimer::default();
        // The first request arms the sleep for t=10 s and is answered at t=1 s.
        let first = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                1
            })
            .await;
        assert_eq!(first, Some(1));
        // The second one's deadline is t=11 s: the sleep fires at t=10 s for the first's,
        // which must not end this one; it ends at its own deadline.
        let started = tokio::time::Instant::now();
        let second = timer
            .run(now() + Duration::from_secs(10), async {
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
            .await;
        assert_eq!(second, None);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // Many quick requests in a row leave it working.
        for i in 0..100 {
            let quick = timer
                .run(now() + Duration::from_secs(3), async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    i
                })
                .await;
            assert_eq!(quick, Some(i));
        }
        let started = tokio::time::Instant::now();
        let late = timer
            .run(now() + Duration::from_secs(3), std::future::pending::<()>())
            .await;
        assert_eq!(late, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_requests_each_get_their_deadline() {
        let timer = ResponseTimer::default();
        let deadline = now() + Duration::from_secs(5);
        let (a, b) = tokio::join!(
            timer.run(deadline, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
            timer.run(deadline, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
        );
        assert_eq!((a, b), (None, None));
    }
}
