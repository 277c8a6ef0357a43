//! The chat completions wire format, shared with the llama.cpp adapter: the request built from
//! a [`ProviderRequest`], the answer and its usage and timings read into a [`ProviderOutput`].

use std::collections::BTreeMap;

use ray_core::wire::{
    ChatTurn, FinishReason, FunctionCall, ProviderDiagnostics, ProviderTimings, ResponseFormatKind,
    ToolCall,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProviderError;
use crate::provider::{ProviderOutput, ProviderRequest};

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
pub(super) fn finish_with_tools(
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
pub(super) fn chat_output(
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

#[cfg(test)]
mod tests {
    use ray_core::wire::{FinishReason, ProviderDiagnostics};

    use super::*;

    fn parse(json: &str) -> ChatResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_llama_cpp_chat_answers() {
        let sample = include_str!("../../../tools/llama-fixture/samples/v1_chat_completions.txt");
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
