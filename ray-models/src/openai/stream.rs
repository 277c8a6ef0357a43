//! A streamed chat completion: its events assembled into one output (text, tool calls,
//! logprobs, usage), the schema check of a `json_schema` answer, and opening the call.

use ray_core::wire::{ProviderDiagnostics, ResponseFormatKind};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ProviderError;
use crate::http::BackendClient;
use crate::provider::{ProviderOutput, ProviderRequest, TokenStream};
use crate::upstream::{self, Assembler, CallTimeout, Opened, Step};

use super::wire::*;

/// One event of a streamed chat completion.
#[derive(Debug, Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<UsageBlock>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    timings: Option<LlamaTimings>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    /// Legacy completions put the text here.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<Logprobs>,
}

#[derive(Debug, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

/// Most log-probability entries kept from one answer.
const MAX_LOGPROB_ENTRIES: usize = 65_536;

/// Reads a streamed chat completion: text from `choices[0].delta.content`, the finish reason,
/// then usage and llama.cpp's timings from the last chunks, until `[DONE]`.
#[derive(Debug)]
pub(crate) struct ChatAssembler {
    diagnostics: ProviderDiagnostics,
    finish_reason: Option<String>,
    usage: Option<UsageBlock>,
    timings: Option<LlamaTimings>,
    tool_calls: ToolCalls,
    logprobs: Option<Vec<Value>>,
}

impl ChatAssembler {
    pub(crate) fn new(diagnostics: ProviderDiagnostics) -> ChatAssembler {
        ChatAssembler {
            diagnostics,
            finish_reason: None,
            usage: None,
            timings: None,
            tool_calls: ToolCalls::default(),
            logprobs: None,
        }
    }
}

impl Assembler for ChatAssembler {
    fn event(&mut self, data: &str) -> Result<Step, ProviderError> {
        if data.trim() == "[DONE]" {
            return Ok(Step {
                text: None,
                end: true,
            });
        }
        let chunk: ChatChunk =
            serde_json::from_str(data).map_err(|error| ProviderError::InvalidResponse {
                reason: format!("an event of the backend's stream is not a chat chunk: {error}"),
            })?;
        if let Some(error) = &chunk.error {
            return Err(upstream::error_event(data, error));
        }
        if let Some(model) = chunk.model {
            self.diagnostics.backend_model.get_or_insert(model);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if chunk.timings.is_some() {
            self.timings = chunk.timings;
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(Step::default());
        };
        if choice.finish_reason.is_some() {
            self.finish_reason = choice.finish_reason;
        }
        if let Some(content) = choice.logprobs.and_then(|l| l.content) {
            let kept = self.logprobs.get_or_insert_with(Vec::new);
            let room = MAX_LOGPROB_ENTRIES.saturating_sub(kept.len());
            kept.extend(content.into_iter().take(room));
        }
        let (content, calls) = match choice.delta {
            Some(delta) => (delta.content, delta.tool_calls),
            None => (None, None),
        };
        if let Some(calls) = calls {
            self.tool_calls.add(calls);
        }
        let text = content.or(choice.text);
        Ok(Step { text, end: false })
    }

    fn finish(self, text: String, complete: bool) -> Result<ProviderOutput, ProviderError> {
        // `[DONE]` ends a stream; a server that just closes it after the finish reason is
        // accepted too. Without either, the answer was cut off.
        if !complete && self.finish_reason.is_none() {
            return Err(ProviderError::InvalidResponse {
                reason: "the backend's stream ended before the answer was complete".into(),
            });
        }
        let tool_calls = self.tool_calls.finish();
        let mut output = chat_output(
            text,
            self.finish_reason.as_deref(),
            self.usage.as_ref(),
            self.timings,
            self.diagnostics,
        );
        output.finish_reason =
            finish_with_tools(self.finish_reason.as_deref(), tool_calls.as_deref());
        output.tool_calls = tool_calls;
        output.logprobs = self.logprobs;
        Ok(output)
    }
}

/// Checks a `json_schema` answer once it is complete: its text must parse and follow the
/// schema, else the stream ends with [`ProviderError::SchemaMismatch`] instead of the output.
pub(crate) fn check_schema(stream: TokenStream, request: &ProviderRequest) -> TokenStream {
    use futures_util::StreamExt;
    let Some(spec) = request
        .extensions
        .json_schema
        .clone()
        .filter(|_| request.response_format == ResponseFormatKind::JsonSchema)
    else {
        return stream;
    };
    Box::pin(stream.map(move |event| match event {
        Ok(crate::provider::StreamEvent::Done(output)) => {
            match schema_problem(&spec.schema, &output.text) {
                None => Ok(crate::provider::StreamEvent::Done(output)),
                Some(reason) => Err(ProviderError::SchemaMismatch { reason }),
            }
        }
        other => other,
    }))
}

/// Why `text` does not follow `schema`, if it does not.
pub(crate) fn schema_problem(schema: &Value, text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text.trim()) {
        Err(error) => Some(format!("the answer is not JSON ({error})")),
        Ok(value) => ray_core::json_schema::validate(schema, &value).err(),
    }
}

/// Starts a chat completion, streamed from the backend; a backend that answers with one
/// document instead is read whole.
pub(crate) async fn open_chat(
    client: &BackendClient,
    body: &ChatRequest<'_>,
    diagnostics: ProviderDiagnostics,
    timeout: CallTimeout,
) -> Result<TokenStream, ProviderError> {
    match upstream::open(client, "/v1/chat/completions", body, timeout).await? {
        Opened::Events(reader) => Ok(upstream::token_stream(
            reader,
            ChatAssembler::new(diagnostics),
        )),
        Opened::Document(bytes) => {
            let response: ChatResponse =
                serde_json::from_slice(&bytes).map_err(|error| ProviderError::InvalidResponse {
                    reason: format!("the backend's JSON does not match: {error}"),
                })?;
            Ok(upstream::document_stream(
                response.into_output(diagnostics)?,
            ))
        }
    }
}
