//! The events of a streamed `POST /v1/infer` (`"stream": true`).
//!
//! On the wire each is one Server-Sent Event whose `event:` field names its kind and whose
//! `data:` is one line of JSON:
//!
//! ```text
//! event: delta
//! data: {"text":"Hel"}
//!
//! event: delta
//! data: {"text":"lo"}
//!
//! event: done
//! data: {"id":"req_…","model":"…","output":"Hello","usage":{…},"cached":false,…}
//! ```
//!
//! `done` carries exactly the non-streamed response (its `output` is every delta joined). A
//! failure after the first event ends the stream with `event: error` and the usual error body
//! as data; a failure before it is an ordinary HTTP error response.

use serde::{Deserialize, Serialize};

use crate::error::ErrorBody;
use crate::wire::InferResponse;

/// New text of a streamed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamDelta {
    /// The text generated since the previous delta.
    pub text: String,
}

/// One event of a streamed `/v1/infer` response.
#[derive(Debug, Clone, PartialEq)]
pub enum InferEvent {
    /// New text.
    Delta(StreamDelta),
    /// The stream ended; the complete response, as `/v1/infer` answers without streaming.
    Done(Box<InferResponse>),
    /// The stream failed after it had started.
    Error(ErrorBody),
}

impl InferEvent {
    /// The SSE `event:` name: `delta`, `done` or `error`.
    pub fn name(&self) -> &'static str {
        match self {
            InferEvent::Delta(_) => "delta",
            InferEvent::Done(_) => "done",
            InferEvent::Error(_) => "error",
        }
    }

    /// Parses an event from its SSE name and data.
    pub fn parse(name: &str, data: &str) -> Result<InferEvent, String> {
        let error = |e: serde_json::Error| format!("{name} event: {e}");
        match name {
            "delta" => serde_json::from_str(data)
                .map(InferEvent::Delta)
                .map_err(error),
            "done" => serde_json::from_str(data)
                .map(|r| InferEvent::Done(Box::new(r)))
                .map_err(error),
            "error" => serde_json::from_str(data)
                .map(InferEvent::Error)
                .map_err(error),
            other => Err(format!("unknown event {other:?}")),
        }
    }
}
