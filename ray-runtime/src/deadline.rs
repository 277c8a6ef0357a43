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

use tokio::time::Instant;

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` until `deadline`, like `tokio::time::timeout_at`, but polls it once before
/// building a timer: a future that is ready on its first poll costs no timer. A deadline
/// already past still lets that first poll finish the work, as `tokio::time::timeout_at` does.
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
    let mut future = pin!(future);
    if let Some(output) = poll_once(future.as_mut()).await {
        return Ok(output);
    }
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| Elapsed)
}

/// Runs `future` for at most `duration`, like `tokio::time::timeout`, but polls it once before
/// reading the clock or building a timer (see [`timeout_at`]); the duration counts from that
/// first poll.
///
/// Must run inside a Tokio runtime with the time driver enabled.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    if let Some(output) = poll_once(future.as_mut()).await {
        return Ok(output);
    }
    tokio::time::timeout(duration, future)
        .await
        .map_err(|_| Elapsed)
}

/// The future's output if it is ready on this first poll (its waker kept otherwise).
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Option<F::Output> {
    let mut first = true;
    poll_fn(|cx| {
        if std::mem::take(&mut first) {
            match future.as_mut().poll(cx) {
                Poll::Ready(output) => Poll::Ready(Some(output)),
                Poll::Pending => Poll::Ready(None),
            }
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn a_first_pending_poll_keeps_its_waker() {
        // The work registers its waker on the first poll (before the timer exists) and is
        // woken by the other task: it must still finish.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(3).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(timeout_at(deadline, rx).await, Ok(Ok(3)));
    }
}
