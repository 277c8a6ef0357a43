//! The OpenAI-compatible front door: request and response types of `POST /v1/chat/completions`,
//! `POST /v1/completions` and `GET /v1/models`, their translation to and from Ray's own
//! [`InferRequest`] and [`InferResponse`](crate::wire::InferResponse), and the OpenAI error shape.
//!
//! The translation is strict where silence would mislead: a parameter Ray does not support is
//! refused with `unsupported_parameter` naming it, instead of being ignored. Parameters at
//! their neutral value (`n: 1`, `presence_penalty: 0`, `logprobs: false`, ...) are accepted.
//!
//! ```
//! use ray_core::wire::openai::ChatCompletionRequest;
//!
//! let request: ChatCompletionRequest = serde_json::from_str(r#"{
//!     "model": "qwen", "max_tokens": 64,
//!     "messages": [{"role": "system", "content": "Be brief."},
//!                  {"role": "user", "content": "Hi"},
//!                  {"role": "assistant", "content": "Hello!"},
//!                  {"role": "user", "content": "What is a queue?"}]
//! }"#)?;
//! let infer = request.to_infer()?;
//! assert_eq!(infer.system.as_deref(), Some("Be brief."));
//! assert_eq!(infer.input.as_deref(), Some("What is a queue?"));
//! assert_eq!(infer.history.as_ref().map(Vec::len), Some(2));
//! assert_eq!(infer.max_tokens, Some(64));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod extensions;
use extensions::extensions_of;
mod response;

pub use response::*;

use crate::error::{ErrorCode, RayError};
use crate::wire::generation::{JsonSchemaFormat, ToolCall, out_of_range};
use crate::wire::{ChatTurn, InferRequest, ResponseFormat, ResponseFormatKind, TurnRole};

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model; must be the gateway's `model.id` (or its `modelRef`) when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation: `system`/`developer` messages, then `user` and `assistant` turns
    /// ending with a `user` message.
    pub messages: Vec<ChatMessage>,
    /// Answer with Server-Sent Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Output tokens at most (older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output tokens at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// One stop string or several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// `{"type": "text"}` or `{"type": "json_object"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Metadata (string values) passed to Ray's `metadata` (`promptFamily`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Every other field, checked by [`ChatCompletionRequest::to_infer`].
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or an array of `{"type": "text", "text": ...}` parts.
    #[serde(default)]
    pub content: Value,
    /// Every other field (`name` is accepted and ignored).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl ChatMessage {
    /// A message with text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Value::String(content.into()),
            other: BTreeMap::new(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and empty `choices`).
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(one) => vec![one],
            Stop::Many(many) => many,
        }
    }
}

/// `POST /v1/completions` (the legacy text endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model; must be the gateway's when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The prompt: a string, or a list of exactly one string.
    pub prompt: Value,
    /// Answer with Server-Sent Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Output tokens at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// One stop string or several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Every other field, checked by [`CompletionRequest::to_infer`].
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

pub(super) fn unsupported(param: &str, why: &str) -> RayError {
    RayError::new(ErrorCode::UnsupportedParameter, format!("{param}: {why}"))
        .with_details(serde_json::json!({ "param": param }))
}

pub(super) fn invalid(param: &str, message: String) -> RayError {
    RayError::invalid_request(format!("{param}: {message}"))
        .with_details(serde_json::json!({ "param": param }))
}

/// Which route a request came in on: the chat route takes more parameters than the legacy
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Chat,
    Legacy,
}

/// Refuses the fields Ray does not support, accepting neutral values of common ones. The
/// parameters Ray passes on (penalties, `logit_bias`, `n`, and on the chat route `logprobs`,
/// `top_logprobs` and the tools) are read by [`extensions_of`].
fn check_other(other: &BTreeMap<String, Value>, door: Door) -> Result<(), RayError> {
    for (name, value) in other {
        let passed_on = match name.as_str() {
            "n" | "presence_penalty" | "frequency_penalty" | "logit_bias" => true,
            "logprobs" | "top_logprobs" | "tools" | "tool_choice" | "parallel_tool_calls" => {
                door == Door::Chat
            }
            _ => false,
        };
        if passed_on {
            continue;
        }
        if name == "user" && !value.is_string() && !value.is_null() {
            return Err(invalid("user", "must be a string".into()));
        }
        let neutral = match name.as_str() {
            "best_of" => value.as_u64() == Some(1),
            "logprobs" | "echo" | "store" => value.is_null() || value == &Value::Bool(false),
            "user" => true,
            "service_tier" => matches!(value.as_str(), Some("auto" | "default")),
            "suffix" | "top_logprobs" | "functions" | "function_call" => value.is_null(),
            _ => false,
        };
        if !neutral {
            let why = match name.as_str() {
                "best_of" => "only 1 is supported",
                "logprobs" | "top_logprobs" | "echo" => {
                    "log probabilities are supported on /v1/chat/completions only"
                }
                "functions" | "function_call" => {
                    "the deprecated function calling is not supported; use tools and tool_choice"
                }
                _ => "this parameter is not supported by this gateway",
            };
            return Err(unsupported(name, why));
        }
    }
    Ok(())
}

/// Checks the native problems of the translated request (tool choice, schema, ...) and
/// names the OpenAI parameter of the first.
fn check_translated(request: &InferRequest) -> Result<(), RayError> {
    let problems = request.extensions().problems();
    let Some(first) = problems.first() else {
        return Ok(());
    };
    let (field, message) = first.split_once(": ").unwrap_or(("request", first));
    let param = openai_name(field);
    Err(invalid(&param, message.to_string()))
}

/// `topLogprobs` → `top_logprobs`, `responseFormat.json_schema` → `response_format.json_schema`.
fn openai_name(native: &str) -> String {
    let mut out = String::with_capacity(native.len() + 4);
    for c in native.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The ranges an OpenAI-compatible request must keep: a value outside them is refused with
/// 400 naming the parameter and the limit, never clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorLimits {
    /// `model.maxOutputTokens`: the most output tokens one choice may ask for.
    pub max_output_tokens: u32,
    /// The most choices (`n`) one request may ask for.
    pub max_n: u32,
}

/// Checks `max_tokens` (named `param`), `temperature`, `top_p` and `n` against `limits`.
fn check_ranges(
    param: &str,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    limits: DoorLimits,
) -> Result<(), RayError> {
    use crate::wire::generation::ranges::*;
    if let Some(max) = max_tokens
        && !(1..=limits.max_output_tokens).contains(&max)
    {
        return Err(out_of_range(
            param,
            &format!(
                "between 1 and {} (this model's maxOutputTokens)",
                limits.max_output_tokens
            ),
            max,
        ));
    }
    if let Some(t) = temperature
        && !(TEMPERATURE_MIN..=TEMPERATURE_MAX).contains(&t)
    {
        return Err(out_of_range(
            "temperature",
            &format!("between {TEMPERATURE_MIN} and {TEMPERATURE_MAX}"),
            t,
        ));
    }
    if let Some(p) = top_p
        && !(TOP_P_MIN..=TOP_P_MAX).contains(&p)
    {
        return Err(out_of_range(
            "top_p",
            &format!("between {TOP_P_MIN} and {TOP_P_MAX} on this gateway"),
            p,
        ));
    }
    if let Some(n) = n
        && n > limits.max_n
    {
        return Err(out_of_range(
            "n",
            &format!("between 1 and {} (scheduler.maxChoices)", limits.max_n),
            n,
        ));
    }
    Ok(())
}

fn text_of(content: &Value, param: &str) -> Result<String, RayError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    (Some("text"), None) => {
                        return Err(invalid(
                            &format!("{param}[{i}].text"),
                            "must be a string".into(),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(unsupported(
                            &format!("{param}[{i}].type"),
                            &format!("only text parts are supported, got {other:?}"),
                        ));
                    }
                    (None, _) => {
                        return Err(invalid(
                            &format!("{param}[{i}].type"),
                            "must be a string".into(),
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            param,
            "must be a string or an array of parts".into(),
        )),
    }
}

fn response_format(value: &Value) -> Result<Option<ResponseFormat>, RayError> {
    match value["type"].as_str() {
        Some("text") => Ok(Some(ResponseFormat::of(ResponseFormatKind::Text))),
        Some("json_object") => Ok(Some(ResponseFormat::of(ResponseFormatKind::JsonObject))),
        Some("json_schema") => {
            let spec = value
                .get("json_schema")
                .filter(|v| !v.is_null())
                .ok_or_else(|| {
                    invalid(
                        "response_format.json_schema",
                        "is required with type json_schema".into(),
                    )
                })?;
            let spec: JsonSchemaFormat = serde_json::from_value(spec.clone())
                .map_err(|error| invalid("response_format.json_schema", error.to_string()))?;
            Ok(Some(ResponseFormat {
                kind: ResponseFormatKind::JsonSchema,
                json_schema: Some(spec),
            }))
        }
        Some(other) => Err(unsupported(
            "response_format.type",
            &format!("only text, json_object and json_schema are supported, got {other:?}"),
        )),
        None => Err(invalid(
            "response_format",
            "must be an object with a type".into(),
        )),
    }
}

fn check_stream_options(
    stream: Option<bool>,
    options: Option<&StreamOptions>,
) -> Result<(), RayError> {
    if options.is_some() && stream != Some(true) {
        return Err(invalid(
            "stream_options",
            "is only allowed when stream is true".into(),
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    /// The request as Ray's own: system and developer messages become `system`, the last
    /// `user` message `input`, the turns before it `history`.
    pub fn to_infer(&self) -> Result<InferRequest, RayError> {
        check_other(&self.other, Door::Chat)?;
        check_stream_options(self.stream, self.stream_options.as_ref())?;
        let extensions = extensions_of(&self.other)?;
        let mut system: Vec<String> = Vec::new();
        let mut turns: Vec<ChatTurn> = Vec::new();
        for (i, message) in self.messages.iter().enumerate() {
            let param = format!("messages[{i}]");
            for key in message.other.keys() {
                let allowed = match key.as_str() {
                    "name" => true,
                    "tool_calls" => message.role == "assistant",
                    "tool_call_id" => message.role == "tool",
                    _ => false,
                };
                if !allowed {
                    return Err(unsupported(
                        &format!("{param}.{key}"),
                        "this message field is not supported",
                    ));
                }
            }
            let text = text_of(&message.content, &format!("{param}.content"))?;
            let tool_calls = match message.other.get("tool_calls").filter(|v| !v.is_null()) {
                Some(calls) => Some(
                    serde_json::from_value::<Vec<ToolCall>>(calls.clone()).map_err(|error| {
                        invalid(&format!("{param}.tool_calls"), error.to_string())
                    })?,
                ),
                None => None,
            };
            match message.role.as_str() {
                "system" | "developer" => {
                    if !turns.is_empty() {
                        return Err(unsupported(
                            &format!("{param}.role"),
                            "system messages must come before the conversation",
                        ));
                    }
                    if !text.trim().is_empty() {
                        system.push(text);
                    }
                }
                "user" => turns.push(ChatTurn::new(TurnRole::User, text)),
                "assistant" => turns.push(ChatTurn {
                    tool_calls,
                    ..ChatTurn::new(TurnRole::Assistant, text)
                }),
                "tool" => {
                    let id = message.other.get("tool_call_id").and_then(Value::as_str);
                    let Some(id) = id else {
                        return Err(invalid(
                            &format!("{param}.tool_call_id"),
                            "is required on tool messages".into(),
                        ));
                    };
                    turns.push(ChatTurn {
                        tool_call_id: Some(id.to_string()),
                        ..ChatTurn::new(TurnRole::Tool, text)
                    });
                }
                "function" => {
                    return Err(unsupported(
                        &format!("{param}.role"),
                        "the deprecated function role is not supported; use tool messages",
                    ));
                }
                other => {
                    return Err(invalid(
                        &format!("{param}.role"),
                        format!("must be system, developer, user or assistant, got {other:?}"),
                    ));
                }
            }
        }
        let input = match turns.last().map(|t| t.role) {
            Some(TurnRole::User) => {
                let last = self.messages.len() - 1;
                let content = turns.pop().map(|t| t.content);
                if content.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return Err(invalid(
                        &format!("messages[{last}].content"),
                        "must not be empty: the last user message is what the model answers".into(),
                    ));
                }
                content
            }
            // Tool results for the model to answer: no new user message.
            Some(TurnRole::Tool) => None,
            Some(TurnRole::Assistant) => {
                return Err(unsupported(
                    "messages",
                    "the last message must be from the user or a tool (assistant prefill is not \
                     supported)",
                ));
            }
            None => {
                return Err(invalid(
                    "messages",
                    "must contain at least one user message".into(),
                ));
            }
        };
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    "max_completion_tokens",
                    format!("differs from max_tokens ({a} vs {b}); send one of them"),
                ));
            }
            (a, b) => a.or(b),
        };
        let mut request = InferRequest {
            input,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone().map(Stop::into_vec),
            response_format: self
                .response_format
                .as_ref()
                .map(response_format)
                .transpose()?
                .flatten(),
            metadata: self.metadata.clone(),
            stream: self.stream,
            history: (!turns.is_empty()).then_some(turns),
            ..InferRequest::default()
        };
        // JSON mode answers with what the model wrote, as OpenAI does: a cut-off answer keeps
        // its `length` finish reason instead of being replaced by a repair call's.
        if request
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind == ResponseFormatKind::JsonObject)
        {
            request
                .metadata
                .get_or_insert_with(BTreeMap::new)
                .insert("rayJsonRepair".into(), "off".into());
        }
        extensions.apply(&mut request);
        check_translated(&request)?;
        Ok(request)
    }

    /// How many choices the caller asked for (`n`, default 1).
    pub fn choices(&self) -> u32 {
        extensions_of(&self.other)
            .ok()
            .and_then(|e| e.n)
            .unwrap_or(1)
    }

    /// Checks `max_tokens`/`max_completion_tokens`, `temperature`, `top_p` and `n` against
    /// the gateway's limits: out of range is a 400 naming the parameter and the limit.
    pub fn check_limits(&self, limits: DoorLimits) -> Result<(), RayError> {
        let (param, max) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(max), _) => ("max_completion_tokens", Some(max)),
            (None, max) => ("max_tokens", max),
        };
        let n = extensions_of(&self.other)?.n;
        check_ranges(param, max, self.temperature, self.top_p, n, limits)
    }

    /// Whether the caller asked for a last chunk with the usage.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

impl CompletionRequest {
    /// The request as Ray's own: the prompt becomes `input`.
    pub fn to_infer(&self) -> Result<InferRequest, RayError> {
        check_other(&self.other, Door::Legacy)?;
        check_stream_options(self.stream, self.stream_options.as_ref())?;
        let extensions = extensions_of(&self.other)?;
        let prompt = match &self.prompt {
            Value::String(text) => text.clone(),
            Value::Array(items) if items.len() == 1 => match &items[0] {
                Value::String(text) => text.clone(),
                _ => {
                    return Err(unsupported(
                        "prompt",
                        "token arrays are not supported; send text",
                    ));
                }
            },
            Value::Array(_) => {
                return Err(unsupported("prompt", "exactly one prompt is supported"));
            }
            _ => return Err(invalid("prompt", "must be a string".into())),
        };
        if prompt.trim().is_empty() {
            return Err(invalid("prompt", "must not be empty".into()));
        }
        let mut request = InferRequest {
            input: Some(prompt),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone().map(Stop::into_vec),
            stream: self.stream,
            // A legacy completion continues the prompt as written: no chat template, no
            // tidying (a llama.cpp backend gets it on `/completion` as it is).
            metadata: Some(BTreeMap::from([(
                "rayPromptFormat".to_string(),
                "plain-completion".to_string(),
            )])),
            ..InferRequest::default()
        };
        extensions.apply(&mut request);
        check_translated(&request)?;
        Ok(request)
    }

    /// How many choices the caller asked for (`n`, default 1).
    pub fn choices(&self) -> u32 {
        extensions_of(&self.other)
            .ok()
            .and_then(|e| e.n)
            .unwrap_or(1)
    }

    /// Checks `max_tokens`, `temperature`, `top_p` and `n` against the gateway's limits
    /// (after the parameters this door refuses, so `logprobs` is refused as such).
    pub fn check_limits(&self, limits: DoorLimits) -> Result<(), RayError> {
        check_other(&self.other, Door::Legacy)?;
        let n = extensions_of(&self.other)?.n;
        check_ranges(
            "max_tokens",
            self.max_tokens,
            self.temperature,
            self.top_p,
            n,
            limits,
        )
    }

    /// Whether the caller asked for a last chunk with the usage.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

#[cfg(test)]
mod tests;
