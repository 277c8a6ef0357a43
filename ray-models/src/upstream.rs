//! Streamed backend calls: open a request with `stream: true`, turn its events into Ray's
//! [`TokenStream`] through a per-endpoint [`Assembler`], or collect them into one output.
//!
//! Every generation goes through here, streamed to the client or not, so that dropping the
//! call closes the connection while the backend is still writing to it, which is when
//! `llama-server` notices and stops generating.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ProviderError;
use crate::http::{BackendClient, MAX_RESPONSE_BYTES, read_capped};
use crate::provider::{ProviderOutput, StreamEvent, TokenStream};
use crate::sse::SseReader;

/// What one event did.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// New text, if any.
    pub(crate) text: Option<String>,
    /// The answer is complete.
    pub(crate) end: bool,
}

/// Reads one endpoint's events.
pub(crate) trait Assembler: Send + 'static {
    /// One event's data.
    fn event(&mut self, data: &str) -> Result<Step, ProviderError>;

    /// The output, once the stream is over: `complete` says whether an event ended it (rather
    /// than the body simply stopping). `text` is every delta joined.
    fn finish(self, text: String, complete: bool) -> Result<ProviderOutput, ProviderError>;
}

/// An opened call: the backend streams, or answered with one document anyway.
#[derive(Debug)]
pub(crate) enum Opened {
    Events(Box<SseReader>),
    Document(Bytes),
}

/// How a call's timeout applies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallTimeout {
    /// To the whole call, first byte to last (a one-document answer, as the existing Ray did).
    Whole(Duration),
    /// To each wait: for the first byte, then for every next piece (a stream handed on to a
    /// client, which may rightly run for minutes; the runtime bounds its total).
    EachWait(Duration),
}

/// `POST path` expecting an event stream.
pub(crate) async fn open<B: Serialize>(
    client: &BackendClient,
    path: &str,
    body: &B,
    timeout: CallTimeout,
) -> Result<Opened, ProviderError> {
    let (timeout, each_wait) = match timeout {
        CallTimeout::Whole(timeout) => (timeout, false),
        CallTimeout::EachWait(timeout) => (timeout, true),
    };
    let deadline = Instant::now() + timeout;
    let response = client.post_stream(path, body, timeout).await?;
    let is_stream = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_stream {
        return Ok(Opened::Events(Box::new(SseReader::new(
            response, deadline, timeout, each_wait,
        ))));
    }
    let body = tokio::time::timeout_at(deadline, read_capped(response, timeout))
        .await
        .map_err(|_| ProviderError::Timeout { after: timeout })??;
    Ok(Opened::Document(body))
}

/// The events of `reader` as a [`TokenStream`]: one delta per piece of text, then the output.
/// The text is capped at [`MAX_RESPONSE_BYTES`].
pub(crate) fn token_stream<A: Assembler>(reader: Box<SseReader>, assembler: A) -> TokenStream {
    enum State<A> {
        Reading {
            reader: Box<SseReader>,
            assembler: A,
            text: String,
        },
        /// The final output, after the delta that came with it.
        Last(Result<StreamEvent, ProviderError>),
    }
    let start = State::Reading {
        reader,
        assembler,
        text: String::new(),
    };
    Box::pin(futures_util::stream::unfold(
        Some(start),
        |state| async move {
            let (mut reader, mut assembler, mut text) = match state? {
                State::Reading {
                    reader,
                    assembler,
                    text,
                } => (reader, assembler, text),
                State::Last(last) => return Some((last, None)),
            };
            loop {
                let event = match reader.next().await {
                    Ok(Some(event)) => event,
                    Ok(None) => return Some((done(assembler.finish(text, false)), None)),
                    Err(error) => return Some((Err(error), None)),
                };
                let step = match assembler.event(&event.data) {
                    Ok(step) => step,
                    Err(error) => return Some((Err(error), None)),
                };
                let delta = step.text.filter(|t| !t.is_empty());
                if let Some(delta) = &delta {
                    if text.len() + delta.len() > MAX_RESPONSE_BYTES {
                        let error = ProviderError::ResponseTooLarge {
                            limit: MAX_RESPONSE_BYTES,
                        };
                        return Some((Err(error), None));
                    }
                    text.push_str(delta);
                }
                match (delta, step.end) {
                    (None, false) => continue,
                    (Some(delta), false) => {
                        let state = State::Reading {
                            reader,
                            assembler,
                            text,
                        };
                        return Some((Ok(StreamEvent::Delta(delta)), Some(state)));
                    }
                    (delta, true) => {
                        let output = done(assembler.finish(text, true));
                        return Some(match delta {
                            Some(delta) => {
                                (Ok(StreamEvent::Delta(delta)), Some(State::Last(output)))
                            }
                            None => (output, None),
                        });
                    }
                }
            }
        },
    ))
}

fn done(output: Result<ProviderOutput, ProviderError>) -> Result<StreamEvent, ProviderError> {
    output.map(|o| StreamEvent::Done(Box::new(o)))
}

/// A stream of one document already read: its text as one delta, then the output.
pub(crate) fn document_stream(output: ProviderOutput) -> TokenStream {
    let mut events = Vec::with_capacity(2);
    if !output.text.is_empty() {
        events.push(Ok(StreamEvent::Delta(output.text.clone())));
    }
    events.push(Ok(StreamEvent::Done(Box::new(output))));
    Box::pin(futures_util::stream::iter(events))
}

/// Runs a stream to its end and returns the output.
pub(crate) async fn collect(mut stream: TokenStream) -> Result<ProviderOutput, ProviderError> {
    while let Some(event) = stream.next().await {
        if let StreamEvent::Done(output) = event? {
            return Ok(*output);
        }
    }
    Err(ProviderError::InvalidResponse {
        reason: "the backend's stream ended without an answer".into(),
    })
}

/// The error an `{"error": ...}` event carries: its numeric `code` as the status when it is
/// one, else 502.
pub(crate) fn error_event(data: &str, error: &serde_json::Value) -> ProviderError {
    let status = error["code"]
        .as_u64()
        .filter(|c| (400..600).contains(c))
        .unwrap_or(502) as u16;
    ProviderError::upstream(status, data.as_bytes())
}
