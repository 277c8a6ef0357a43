//! Deadlines that cost nothing when the work is ready at once.
//!
//! `tokio::time::timeout_at` builds its timer before it polls the future: it takes the
//! runtime's handle (a reference count both cores write) and, once polled pending, registers
//! in the timer wheel. On the request path most awaited steps are ready on their first poll
//! (admission with a free permit, a body already read with the head, an answer from a cache
//! or a fast backend), so [`timeout_at`] polls the future once first and builds the timer only
//! when it has to wait.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` until `deadline`, like `tokio::time::timeout_at`, but polls it before it
/// builds a timer: a future that is ready on its first poll costs no timer, and one that
/// waits gets its timer after that first poll (the future is polled once per wake-up, as
/// under `tokio::time::timeout_at`). A deadline already past still lets that first poll
/// finish the work, as `tokio::time::timeout_at` does.
///
/// Must run inside a Tokio runtime with the time driver enabled.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use ray_runtime::deadline::{Elapsed, timeout_at};
/// use tokio::time::Instant;
///
/// let soon = Instant::now() + Duration::from_millis(10);
/// assert_eq!(timeout_at(soon, async { 7 }).await, Ok(7));
/// let never = std::future::pending::<()>();
/// assert_eq!(timeout_at(soon, never).await, Err(Elapsed));
/// # }
/// ```
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    within(future, || tokio::time::sleep_until(deadline)).await
}

/// Runs `future` for at most `duration`, like `tokio::time::timeout`, but polls it before it
/// reads the clock or builds a timer (see [`timeout_at`]); the duration counts from the end
/// of that first poll.
///
/// Must run inside a Tokio runtime with the time driver enabled.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    within(future, || tokio::time::sleep(duration)).await
}

/// Polls `future`; once it has returned pending, `timer()` is built and raced with it.
async fn within<F: Future>(future: F, timer: impl FnOnce() -> Sleep) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut sleep: Pin<&mut Option<Sleep>> = pin!(None);
    let mut timer = Some(timer);
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if let Some(timer) = timer.take() {
            sleep.set(Some(timer()));
        }
        match sleep.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Waker};

    #[tokio::test(start_paused = true)]
    async fn ready_at_once_needs_no_time() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(timeout_at(past, async { 1 }).await, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_work_finishes_before_its_deadline() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let work = async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            2
        };
        assert_eq!(timeout_at(deadline, work).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_work_past_its_deadline_elapses() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let work = tokio::time::sleep(Duration::from_millis(400));
        assert_eq!(timeout_at(deadline, work).await, Err(Elapsed));
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_counts_from_the_first_poll() {
        assert_eq!(timeout(Duration::ZERO, async { 4 }).await, Ok(4));
        let start = Instant::now();
        let work = tokio::time::sleep(Duration::from_secs(9));
        assert_eq!(timeout(Duration::from_secs(2), work).await, Err(Elapsed));
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    /// Ready once `ready` is set; registers its waker on its first poll only, and counts
    /// its polls.
    struct Once {
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
        polls: Arc<AtomicUsize>,
    }

    impl Future for Once {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(polls);
            }
            if polls == 1 {
                *self.waker.lock() = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_polls_waker_wakes_it_and_it_is_polled_once_per_wake_up() {
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let polls = Arc::new(AtomicUsize::new(0));
        let once = Once {
            ready: ready.clone(),
            waker: waker.clone(),
            polls: polls.clone(),
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ready.store(true, Ordering::SeqCst);
            if let Some(waker) = waker.lock().take() {
                waker.wake();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(1);
        // A lost first waker would leave it pending until the deadline.
        assert_eq!(timeout_at(deadline, once).await, Ok(2));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
