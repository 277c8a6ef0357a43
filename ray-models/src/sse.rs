//! Server-Sent Events from a backend: the reader that drives [`ray_core::sse::SseDecoder`] from
//! a response body under a deadline.
//!
//! Ray asks `llama-server` for a stream even when its own client wants one JSON document:
//! `llama-server` notices a closed connection only while it streams, so streaming upstream is
//! what lets a client that leaves, or a deadline that passes, stop the generation.

use std::time::Duration;

use ray_core::sse::{EventTooLarge, SseDecoder, SseEvent};
use tokio::time::Instant;

use crate::error::ProviderError;
use crate::http::transport_error;

/// Largest single event accepted. `llama-server` echoes the whole prompt in the final event of
/// `/completion`, and a prompt may be up to the 1 MiB request cap, JSON-escaped.
pub(crate) const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Reads events from a streaming response until its end or a deadline.
#[derive(Debug)]
pub(crate) struct SseReader {
    response: reqwest::Response,
    decoder: SseDecoder,
    deadline: Instant,
    timeout: Duration,
    /// Move the deadline `timeout` ahead after every piece that arrives.
    each_wait: bool,
    ended: bool,
}

impl SseReader {
    /// `timeout` is what the error reports when `deadline` passes; with `each_wait` the
    /// deadline moves `timeout` ahead whenever a piece arrives.
    pub(crate) fn new(
        response: reqwest::Response,
        deadline: Instant,
        timeout: Duration,
        each_wait: bool,
    ) -> SseReader {
        SseReader {
            response,
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            deadline,
            timeout,
            each_wait,
            ended: false,
        }
    }

    /// The next event, or `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        loop {
            if let Some(event) = self.decoder.next_event().map_err(too_large)? {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let chunk = tokio::time::timeout_at(self.deadline, self.response.chunk())
                .await
                .map_err(|_| ProviderError::Timeout {
                    after: self.timeout,
                })?
                .map_err(|e| transport_error(e, self.timeout))?;
            match chunk {
                Some(bytes) => {
                    if self.each_wait {
                        self.deadline = Instant::now() + self.timeout;
                    }
                    self.decoder.feed(&bytes).map_err(too_large)?;
                }
                None => self.ended = true,
            }
        }
    }
}

fn too_large(error: EventTooLarge) -> ProviderError {
    ProviderError::ResponseTooLarge { limit: error.limit }
}
