//! The OpenAI-compatible backend: `/v1/chat/completions`, health from `/v1/models` (falling
//! back to `/health`), and the chat wire types shared with the llama.cpp adapter.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use std::collections::BTreeMap;

use ray_core::wire::{
    Availability, ChatTurn, DetectedCapabilities, FinishReason, FunctionCall, ProviderDiagnostics,
    ProviderStatus, ProviderTimings, ResponseFormatKind, ToolCall,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProviderError;
use crate::http::{BackendClient, BackendSettings};
use crate::provider::{
    EmbeddingOutput, EmbeddingRequest, Provider, ProviderHealthReport, ProviderOutput,
    ProviderRequest, TokenStream,
};
use crate::upstream::{self, Assembler, CallTimeout, Opened, Step};

/// Most content parts joined into one output.
const MAX_CONTENT_PARTS: usize = 512;

/// A chat completion request.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: Vec<ChatMessage<'a>>,
    pub(crate) stream: bool,
    pub(crate) temperature: f64,
    pub(crate) top_p: f64,
    pub(crate) max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_format: Option<serde_json::Value>,
    pub(crate) user: &'a str,
    /// llama.cpp extension: which slot runs the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id_slot: Option<i64>,
    /// llama.cpp extension: reuse the slot's prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache_prompt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logit_bias: Option<&'a BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tools: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parallel_tool_calls: Option<bool>,
}

/// One chat message.
#[derive(Debug, Serialize)]
pub(crate) struct ChatMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
    /// An assistant turn's tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<&'a [ToolCall]>,
    /// The call a tool turn answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<&'a str>,
}

impl<'a> ChatMessage<'a> {
    /// A plain message.
    pub(crate) fn text(role: &'static str, content: &'a str) -> ChatMessage<'a> {
        ChatMessage {
            role,
            content,
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// The messages of a request: the system prompt, if any, the earlier turns, then the input.
pub(crate) fn messages(request: &ProviderRequest) -> Vec<ChatMessage<'_>> {
    messages_of(request.system.as_deref(), &request.history, &request.input)
}

/// The messages for a system prompt, earlier turns and the latest user message.
pub(crate) fn messages_of<'a>(
    system: Option<&'a str>,
    history: &'a [ChatTurn],
    input: &'a str,
) -> Vec<ChatMessage<'a>> {
    let mut messages = Vec::with_capacity(2 + history.len());
    if let Some(system) = system {
        messages.push(ChatMessage::text("system", system));
    }
    for turn in history {
        messages.push(ChatMessage {
            role: turn.role.as_str(),
            content: &turn.content,
            tool_calls: turn.tool_calls.as_deref(),
            tool_call_id: turn.tool_call_id.as_deref(),
        });
    }
    // A conversation that ends with tool results has no new user message.
    let answers_tools = history
        .last()
        .is_some_and(|turn| turn.role == ray_core::wire::TurnRole::Tool);
    if !(answers_tools && input.is_empty()) {
        messages.push(ChatMessage::text("user", input));
    }
    messages
}

/// The `response_format` sent to the backend.
fn response_format(request: &ProviderRequest) -> Option<Value> {
    match request.response_format {
        ResponseFormatKind::Text => None,
        ResponseFormatKind::JsonObject => Some(serde_json::json!({ "type": "json_object" })),
        ResponseFormatKind::JsonSchema => request
            .extensions
            .json_schema
            .as_ref()
            .map(|spec| serde_json::json!({ "type": "json_schema", "json_schema": spec })),
    }
}

pub(crate) fn chat_request<'a>(model: &'a str, request: &'a ProviderRequest) -> ChatRequest<'a> {
    let extensions = &request.extensions;
    ChatRequest {
        model,
        messages: messages(request),
        stream: true,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_tokens,
        seed: request.seed,
        stop: request.stop.as_deref(),
        response_format: response_format(request),
        user: &request.request_id,
        id_slot: None,
        cache_prompt: None,
        stream_options: Some(serde_json::json!({ "include_usage": true })),
        presence_penalty: extensions.presence_penalty,
        frequency_penalty: extensions.frequency_penalty,
        logit_bias: extensions.logit_bias.as_ref(),
        logprobs: extensions.logprobs,
        top_logprobs: extensions.top_logprobs,
        tools: extensions.tools.as_deref(),
        tool_choice: extensions.tool_choice.as_ref(),
        parallel_tool_calls: extensions.parallel_tool_calls,
    }
}

/// A chat completion answer, as much of it as Ray reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatResponse {
    #[serde(default)]
    pub(crate) choices: Vec<Choice>,
    #[serde(default)]
    pub(crate) usage: Option<UsageBlock>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// llama.cpp adds its timings.
    #[serde(default)]
    pub(crate) timings: Option<LlamaTimings>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    #[serde(default)]
    pub(crate) message: Option<Message>,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
    #[serde(default)]
    pub(crate) logprobs: Option<Logprobs>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    #[serde(default)]
    pub(crate) content: Option<Content>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A choice's `logprobs`: `{"content": [...]}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Logprobs {
    #[serde(default)]
    pub(crate) content: Option<Vec<Value>>,
}

/// A tool call, whole (in a message) or a piece of one (in a chunk's delta).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub(crate) index: Option<usize>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// JSON text; some servers send an object instead.
    #[serde(default)]
    pub(crate) arguments: Option<Value>,
}

/// Tool calls put together from whole calls or streamed pieces, by index.
#[derive(Debug, Default)]
pub(crate) struct ToolCalls {
    calls: Vec<(String, String, String)>,
}

/// Most tool calls kept from one answer.
const MAX_TOOL_CALLS: usize = 64;

impl ToolCalls {
    pub(crate) fn add(&mut self, pieces: Vec<ToolCallDelta>) {
        for (position, piece) in pieces.into_iter().enumerate() {
            let index = piece.index.unwrap_or(position);
            if index >= MAX_TOOL_CALLS {
                continue;
            }
            while self.calls.len() <= index {
                self.calls.push(Default::default());
            }
            let call = &mut self.calls[index];
            if let Some(id) = piece.id {
                call.0 = id;
            }
            if let Some(function) = piece.function {
                if let Some(name) = function.name {
                    call.1.push_str(&name);
                }
                match function.arguments {
                    Some(Value::String(text)) => call.2.push_str(&text),
                    Some(Value::Null) | None => {}
                    Some(other) => call.2.push_str(&other.to_string()),
                }
            }
        }
    }

    /// The calls, each with an id (`call_<n>` when the backend gave none).
    pub(crate) fn finish(self) -> Option<Vec<ToolCall>> {
        let calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .enumerate()
            .filter(|(_, (_, name, _))| !name.is_empty())
            .map(|(i, (id, name, arguments))| ToolCall {
                id: if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                },
                kind: "function".into(),
                function: FunctionCall { name, arguments },
            })
            .collect();
        (!calls.is_empty()).then_some(calls)
    }
}

/// `tool_calls` when the model called tools whose arguments are complete JSON (llama-server
/// can report `length` after a grammar-constrained call), else the backend's reason.
fn finish_with_tools(
    reason: Option<&str>,
    tool_calls: Option<&[ToolCall]>,
) -> Option<FinishReason> {
    match tool_calls {
        Some(calls)
            if calls.iter().all(|c| {
                c.function.arguments.trim().is_empty()
                    || serde_json::from_str::<Value>(&c.function.arguments).is_ok()
            }) =>
        {
            Some(FinishReason::ToolCalls)
        }
        _ => finish_reason(reason),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    #[serde(default)]
    pub(crate) text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsageBlock {
    #[serde(default)]
    pub(crate) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PromptTokensDetails {
    #[serde(default)]
    pub(crate) cached_tokens: Option<u64>,
}

/// llama.cpp's `timings` block (both the native and the OpenAI-style endpoints send it).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct LlamaTimings {
    #[serde(default)]
    pub(crate) cache_n: Option<u64>,
    #[serde(default)]
    pub(crate) prompt_ms: Option<f64>,
    #[serde(default)]
    pub(crate) prompt_per_second: Option<f64>,
    #[serde(default)]
    pub(crate) predicted_ms: Option<f64>,
    #[serde(default)]
    pub(crate) predicted_per_token_ms: Option<f64>,
    #[serde(default)]
    pub(crate) predicted_per_second: Option<f64>,
}

impl LlamaTimings {
    pub(crate) fn to_diagnostics(self) -> ProviderTimings {
        let total = match (self.prompt_ms, self.predicted_ms) {
            (Some(p), Some(c)) => Some(p + c),
            _ => None,
        };
        ProviderTimings {
            prompt_ms: self.prompt_ms,
            completion_ms: self.predicted_ms,
            total_ms: total,
            ttft_ms: self
                .prompt_ms
                .map(|p| p + self.predicted_per_token_ms.unwrap_or(0.0)),
            prompt_tokens_per_second: self.prompt_per_second,
            completion_tokens_per_second: self.predicted_per_second,
        }
    }
}

/// Maps an OpenAI/llama.cpp finish reason.
pub(crate) fn finish_reason(reason: Option<&str>) -> Option<FinishReason> {
    match reason? {
        "length" | "limit" => Some(FinishReason::Length),
        "tool_calls" => Some(FinishReason::ToolCalls),
        "stop" | "eos" | "word" | "content_filter" => Some(FinishReason::Stop),
        _ => None,
    }
}

impl ChatResponse {
    /// The assistant text: `choices[0].text`, else the message content string, else its text
    /// parts joined. A missing choice or content is an invalid response; an empty string is a
    /// valid (empty) answer.
    pub(crate) fn text(&self) -> Result<String, ProviderError> {
        let choice = self
            .choices
            .first()
            .ok_or_else(|| ProviderError::InvalidResponse {
                reason: "the answer has no choices".into(),
            })?;
        if let Some(text) = &choice.text {
            return Ok(text.clone());
        }
        match choice.message.as_ref().and_then(|m| m.content.as_ref()) {
            Some(Content::Text(text)) => Ok(text.clone()),
            Some(Content::Parts(parts)) => Ok(parts
                .iter()
                .take(MAX_CONTENT_PARTS)
                .filter_map(|p| p.text.as_deref())
                .collect()),
            None if choice
                .message
                .as_ref()
                .is_some_and(|m| m.tool_calls.as_ref().is_some_and(|t| !t.is_empty())) =>
            {
                Ok(String::new())
            }
            None => Err(ProviderError::InvalidResponse {
                reason: "the answer's first choice has no content".into(),
            }),
        }
    }

    /// The output with usage, finish reason and timings.
    pub(crate) fn into_output(
        self,
        diagnostics: ProviderDiagnostics,
    ) -> Result<ProviderOutput, ProviderError> {
        let text = self.text()?;
        let mut diagnostics = diagnostics;
        if let Some(model) = &self.model {
            diagnostics
                .backend_model
                .get_or_insert_with(|| model.clone());
        }
        let mut choices = self.choices.into_iter();
        let first = choices.next();
        let finish = first.as_ref().and_then(|c| c.finish_reason.clone());
        let (tool_calls, logprobs) = match first {
            Some(choice) => {
                let mut calls = ToolCalls::default();
                calls.add(
                    choice
                        .message
                        .and_then(|m| m.tool_calls)
                        .unwrap_or_default(),
                );
                (calls.finish(), choice.logprobs.and_then(|l| l.content))
            }
            None => (None, None),
        };
        let mut output = chat_output(
            text,
            finish.as_deref(),
            self.usage.as_ref(),
            self.timings,
            diagnostics,
        );
        output.finish_reason = finish_with_tools(finish.as_deref(), tool_calls.as_deref());
        output.tool_calls = tool_calls;
        output.logprobs = logprobs;
        Ok(output)
    }
}

/// A chat answer's output: usage, finish reason, and llama.cpp's timings and reused prompt
/// tokens in the diagnostics.
fn chat_output(
    text: String,
    finish: Option<&str>,
    usage: Option<&UsageBlock>,
    timings: Option<LlamaTimings>,
    mut diagnostics: ProviderDiagnostics,
) -> ProviderOutput {
    if let Some(timings) = timings {
        diagnostics.timings = Some(timings.to_diagnostics());
        diagnostics.tokens_cached = timings.cache_n;
    }
    if let Some(cached) = usage
        .and_then(|u| u.prompt_tokens_details.as_ref())
        .and_then(|d| d.cached_tokens)
    {
        diagnostics.tokens_cached = Some(cached);
    }
    ProviderOutput {
        text,
        finish_reason: finish_reason(finish),
        prompt_tokens: usage.and_then(|u| u.prompt_tokens),
        completion_tokens: usage.and_then(|u| u.completion_tokens),
        diagnostics,
        tool_calls: None,
        logprobs: None,
    }
}

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

/// Settings of an [`OpenAiProvider`].
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// How to reach the backend.
    pub backend: BackendSettings,
    /// The model name sent in requests.
    pub model_ref: String,
}

/// A backend speaking the OpenAI chat completions API.
#[derive(Debug)]
pub struct OpenAiProvider {
    client: BackendClient,
    model_ref: String,
}

impl OpenAiProvider {
    /// A provider for one backend.
    pub fn new(settings: OpenAiSettings) -> Result<OpenAiProvider, ProviderError> {
        Ok(OpenAiProvider {
            client: BackendClient::new(settings.backend)?,
            model_ref: settings.model_ref,
        })
    }

    fn diagnostics(&self) -> ProviderDiagnostics {
        ProviderDiagnostics {
            request_shape: "openai-chat".into(),
            model_ref: Some(self.model_ref.clone()),
            ..ProviderDiagnostics::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

/// Health from `GET /v1/models` (the model must be listed when there is a list), falling back
/// to `GET /health`.
pub(crate) async fn openai_health(client: &BackendClient, model_ref: &str) -> ProviderHealthReport {
    let started = Instant::now();
    let timeout = client.timeout().min(Duration::from_secs(5));
    let mut details = serde_json::Map::new();
    match client.get("/v1/models", timeout).await {
        Ok(response) if (200..300).contains(&response.status) => {
            if let Ok(list) = response.json::<ModelList>()
                && !list.data.is_empty()
            {
                let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
                let status = if ids.contains(&model_ref) {
                    ProviderStatus::Ready
                } else {
                    details.insert(
                        "error".into(),
                        format!("the backend does not serve model {model_ref:?}").into(),
                    );
                    details.insert(
                        "availableModels".into(),
                        ids.iter().take(10).copied().collect::<Vec<_>>().into(),
                    );
                    ProviderStatus::Unavailable
                };
                return ProviderHealthReport {
                    status,
                    latency: Some(started.elapsed()),
                    capabilities: None,
                    details: Some(details.into()),
                };
            }
        }
        Ok(response) => {
            details.insert("modelsStatus".into(), response.status.into());
        }
        Err(error) => {
            details.insert("modelsError".into(), error.to_string().into());
        }
    }
    let status = match client.get("/health", timeout).await {
        Ok(response) if (200..300).contains(&response.status) => ProviderStatus::Ready,
        Ok(response) => {
            details.insert("healthStatus".into(), response.status.into());
            ProviderStatus::Unavailable
        }
        Err(error) => {
            details.insert("healthError".into(), error.to_string().into());
            ProviderStatus::Unavailable
        }
    };
    ProviderHealthReport {
        status,
        latency: Some(started.elapsed()),
        capabilities: None,
        details: Some(details.into()),
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai-compatible"
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        let body = chat_request(&self.model_ref, request);
        let timeout = CallTimeout::Whole(self.client.timeout());
        let stream = open_chat(&self.client, &body, self.diagnostics(), timeout).await?;
        upstream::collect(check_schema(stream, request)).await
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        let body = chat_request(&self.model_ref, request);
        let timeout = CallTimeout::EachWait(self.client.timeout());
        let stream = open_chat(&self.client, &body, self.diagnostics(), timeout).await?;
        Ok(check_schema(stream, request))
    }

    async fn health(&self) -> ProviderHealthReport {
        let mut report = openai_health(&self.client, &self.model_ref).await;
        report.capabilities = self.capabilities();
        report
    }

    fn has_health_probe(&self) -> bool {
        true
    }

    fn supports_embeddings(&self) -> bool {
        true
    }

    /// `POST /v1/embeddings` with `modelRef`; a backend that does not serve it answers
    /// `model_capability_unsupported` (501) or its own error.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        crate::embed::http_embed(&self.client, &self.model_ref, request).await
    }

    fn capabilities(&self) -> Option<DetectedCapabilities> {
        Some(DetectedCapabilities {
            model_ref: Some(self.model_ref.clone()),
            json_mode: Availability::Unknown,
            streaming: Availability::Available,
            ..DetectedCapabilities::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ChatResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_llama_cpp_chat_answers() {
        let sample = include_str!("../../tools/llama-fixture/samples/v1_chat_completions.txt");
        let json = sample.split("\n--- HTTP").next().unwrap();
        let output = parse(json)
            .into_output(ProviderDiagnostics::default())
            .unwrap();
        assert!(output.text.starts_with(" on it"));
        assert_eq!(output.finish_reason, Some(FinishReason::Length));
        assert_eq!(
            (output.prompt_tokens, output.completion_tokens),
            (Some(43), Some(24))
        );
        let timings = output.diagnostics.timings.unwrap();
        assert_eq!(timings.prompt_ms, Some(5.361));
        assert_eq!(
            output.diagnostics.backend_model.as_deref(),
            Some("ray-tiny")
        );
    }

    #[test]
    fn joins_content_parts_and_accepts_text_choices() {
        let parts = parse(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
        );
        assert_eq!(parts.text().unwrap(), "ab");
        let text = parse(r#"{"choices":[{"text":"plain","finish_reason":"stop"}]}"#);
        assert_eq!(text.text().unwrap(), "plain");
        let empty = parse(r#"{"choices":[{"message":{"content":""},"finish_reason":"stop"}]}"#);
        assert_eq!(empty.text().unwrap(), "", "an empty answer is an answer");
    }

    #[test]
    fn missing_content_is_invalid() {
        assert!(matches!(
            parse(r#"{"choices":[]}"#).text(),
            Err(ProviderError::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse(r#"{"choices":[{"message":{}}]}"#).text(),
            Err(ProviderError::InvalidResponse { .. })
        ));
    }
}
