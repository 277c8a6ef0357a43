//! The keep-alive idle timeout: what one connection has been doing, and a stream wrapper that
//! records when bytes move.
//!
//! hyper's header-read timeout bounds how long the next request's headers may take, counted
//! from the end of the previous response; it is not an idle limit. A kept-alive connection is
//! idle when no request is in progress and no byte of the next one has arrived, and it is
//! closed once it has been idle for the keep-alive timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What one connection has been doing, updated by its stream and its request handler.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted; activity times are milliseconds since then.
    opened: Instant,
    /// The last time bytes were read or written, or a response was produced.
    last_ms: AtomicU64,
    /// Requests whose handler is running.
    in_flight: AtomicU32,
    /// Responses produced so far. Before the first, the header-read timeout alone applies.
    responses: AtomicU32,
    /// Bytes arrived since the last response: the next request has begun, so the connection is
    /// not idle (the header-read timeout governs it).
    next_request_started: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            responses: AtomicU32::new(0),
            next_request_started: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// A request's handler starts.
    pub(crate) fn request_started(&self) -> RequestGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self)
    }

    /// When the connection will have been idle for `timeout`, or `None` if it has been
    /// already. A connection that is busy, or has not answered a request yet, is checked
    /// again a whole `timeout` later.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.responses.load(Ordering::Relaxed) == 0
            || self.in_flight.load(Ordering::Relaxed) > 0
            || self.next_request_started.load(Ordering::Relaxed)
        {
            return Some(now + timeout);
        }
        let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let deadline = last + timeout;
        (deadline > now).then_some(deadline)
    }
}

/// Marks a request finished when dropped, also when the handler is cancelled.
pub(crate) struct RequestGuard<'a>(&'a Activity);

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        let activity = self.0;
        activity
            .next_request_started
            .store(false, Ordering::Relaxed);
        activity.responses.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(stream: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { stream, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        // No time is taken here: while `next_request_started` is set, the last activity is
        // not looked at, and only the end of a response (which takes the time) clears it.
        if buf.filled().len() > before {
            self.activity
                .next_request_started
                .store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_a_response_with_nothing_in_progress() {
        let timeout = Duration::from_secs(5);
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            activity.idle_deadline(timeout).is_some(),
            "no response yet: the header-read timeout applies"
        );

        let guard = activity.request_started();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(activity.idle_deadline(timeout).is_some(), "busy");
        drop(guard);

        let deadline = activity.idle_deadline(timeout).unwrap();
        assert_eq!(deadline, Instant::now() + timeout);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.idle_deadline(timeout), None, "idle for 5 s");

        // Bytes of a next request end the idleness.
        activity.next_request_started.store(true, Ordering::Relaxed);
        assert!(activity.idle_deadline(timeout).is_some());
    }
}
