//! The OpenAI-compatible front door: request and response types of `POST /v1/chat/completions`,
//! `POST /v1/completions` and `GET /v1/models`, their translation to and from Ray's own
//! [`InferRequest`] and [`InferResponse`], and the OpenAI error shape.
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

use crate::error::{ErrorCode, RayError};
use crate::wire::{
    ChatTurn, FinishReason, InferRequest, InferResponse, ResponseFormat, ResponseFormatKind,
    TurnRole,
};

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

fn unsupported(param: &str, why: &str) -> RayError {
    RayError::new(ErrorCode::UnsupportedParameter, format!("{param}: {why}"))
        .with_details(serde_json::json!({ "param": param }))
}

fn invalid(param: &str, message: String) -> RayError {
    RayError::invalid_request(format!("{param}: {message}"))
        .with_details(serde_json::json!({ "param": param }))
}

/// Refuses the fields Ray does not support, accepting neutral values of common ones.
fn check_other(other: &BTreeMap<String, Value>) -> Result<(), RayError> {
    for (name, value) in other {
        let neutral = match name.as_str() {
            "n" | "best_of" => value.as_u64() == Some(1),
            "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
            "logprobs" | "echo" | "store" | "parallel_tool_calls" => {
                value.is_null() || value == &Value::Bool(false)
            }
            "user" => value.is_string(),
            "service_tier" => matches!(value.as_str(), Some("auto" | "default")),
            "suffix" | "top_logprobs" | "logit_bias" | "tools" | "tool_choice" | "functions"
            | "function_call" => value.is_null(),
            _ => false,
        };
        if !neutral {
            let why = match name.as_str() {
                "n" | "best_of" => "only 1 is supported",
                "presence_penalty" | "frequency_penalty" => "only 0 is supported",
                "logprobs" | "top_logprobs" | "echo" => "log probabilities are not supported",
                "tools" | "tool_choice" | "functions" | "function_call" | "parallel_tool_calls" => {
                    "tool calling is not supported"
                }
                _ => "this parameter is not supported by this gateway",
            };
            return Err(unsupported(name, why));
        }
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
        Some("text") => Ok(Some(ResponseFormat {
            kind: ResponseFormatKind::Text,
        })),
        Some("json_object") => Ok(Some(ResponseFormat {
            kind: ResponseFormatKind::JsonObject,
        })),
        Some(other) => Err(unsupported(
            "response_format.type",
            &format!("only text and json_object are supported, got {other:?}"),
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
        check_other(&self.other)?;
        check_stream_options(self.stream, self.stream_options.as_ref())?;
        let mut system: Vec<String> = Vec::new();
        let mut turns: Vec<ChatTurn> = Vec::new();
        for (i, message) in self.messages.iter().enumerate() {
            let param = format!("messages[{i}]");
            for key in message.other.keys() {
                if key != "name" {
                    return Err(unsupported(
                        &format!("{param}.{key}"),
                        "this message field is not supported",
                    ));
                }
            }
            let text = text_of(&message.content, &format!("{param}.content"))?;
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
                "user" => turns.push(ChatTurn {
                    role: TurnRole::User,
                    content: text,
                }),
                "assistant" => turns.push(ChatTurn {
                    role: TurnRole::Assistant,
                    content: text,
                }),
                "tool" | "function" => {
                    return Err(unsupported(
                        &format!("{param}.role"),
                        "tool calling is not supported",
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
        let input = match turns.pop() {
            Some(ChatTurn {
                role: TurnRole::User,
                content,
            }) => content,
            Some(ChatTurn {
                role: TurnRole::Assistant,
                ..
            }) => {
                return Err(unsupported(
                    "messages",
                    "the last message must be from the user (assistant prefill is not supported)",
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
        Ok(InferRequest {
            input: Some(input),
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
        })
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
        check_other(&self.other)?;
        check_stream_options(self.stream, self.stream_options.as_ref())?;
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
        Ok(InferRequest {
            input: Some(prompt),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone().map(Stop::into_vec),
            stream: self.stream,
            ..InferRequest::default()
        })
    }

    /// Whether the caller asked for a last chunk with the usage.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Token usage in OpenAI's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl OpenAiUsage {
    /// The usage of a Ray response: the token counts when the backend reported them, else
    /// estimates (the prompt tokens admission used, completion characters / 4), so clients
    /// that budget by usage never see zero for work that was done.
    pub fn of(response: &InferResponse) -> OpenAiUsage {
        let (prompt, completion) = match response.usage.tokens {
            Some(tokens) => (tokens.prompt, tokens.completion),
            None => {
                let prompt = response
                    .diagnostics
                    .scheduler
                    .as_ref()
                    .map(|s| u64::from(s.prompt_tokens))
                    .unwrap_or_else(|| response.usage.chars.prompt.div_ceil(4));
                (prompt, response.usage.chars.completion.div_ceil(4))
            }
        };
        OpenAiUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// `stop` or `length`, as OpenAI names them.
pub fn finish_reason(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::Stop) | None => "stop",
    }
}

/// An assistant message in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Always 0 (`n` is 1).
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<Value>,
}

/// The answer of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-` and Ray's request id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    pub usage: OpenAiUsage,
}

impl ChatCompletion {
    /// Ray's response in OpenAI's shape.
    pub fn from_infer(response: &InferResponse, created: u64) -> ChatCompletion {
        ChatCompletion {
            id: format!("chatcmpl-{}", response.id),
            object: "chat.completion".into(),
            created,
            model: response.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: response.output.clone(),
                },
                finish_reason: Some(finish_reason(response.finish_reason).into()),
                logprobs: None,
            }],
            usage: OpenAiUsage::of(response),
        }
    }
}

/// The changes a chunk carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat completion chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What changed.
    pub delta: ChunkDelta,
    /// Set in the last chunk with choices.
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<Value>,
}

/// One event of a streamed chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The same id in every chunk.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the usage chunk (`stream_options.include_usage`); null otherwise.
    pub usage: Option<OpenAiUsage>,
}

/// One choice of a text completion (or of one of its chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Always 0.
    pub index: u32,
    /// The text (new text, in a chunk).
    pub text: String,
    /// `stop` or `length` when finished.
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<Value>,
}

/// The answer of `POST /v1/completions`, and each of its chunks when streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// `cmpl-` and Ray's request id.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// One choice (none in a usage chunk).
    pub choices: Vec<CompletionChoice>,
    /// Token usage (in a stream: only the usage chunk has it).
    pub usage: Option<OpenAiUsage>,
}

impl Completion {
    /// Ray's response in OpenAI's shape.
    pub fn from_infer(response: &InferResponse, created: u64) -> Completion {
        Completion {
            id: format!("cmpl-{}", response.id),
            object: "text_completion".into(),
            created,
            model: response.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text: response.output.clone(),
                finish_reason: Some(finish_reason(response.finish_reason).into()),
                logprobs: None,
            }],
            usage: Some(OpenAiUsage::of(response)),
        }
    }
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The id to send as `model`.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds (when the gateway started).
    pub created: u64,
    /// `ray`.
    pub owned_by: String,
    /// Ray: the model's other names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Ray: `general`, `classifier`, `drafter` or `embedding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Ray: whether requests that name no model go to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// Ray: `ready`, `loading`, `degraded`, `unavailable`, `cooldown` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Ray: why it is not ready, as a reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ray: the context window requests must fit, in tokens.
    #[serde(
        default,
        rename = "contextWindow",
        skip_serializing_if = "Option::is_none"
    )]
    pub context_window: Option<u32>,
    /// Ray: the largest output a request may ask for.
    #[serde(
        default,
        rename = "maxOutputTokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<u32>,
    /// Ray: consecutive backend failures, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Ray: while in cooldown, milliseconds until it ends.
    #[serde(
        default,
        rename = "cooldownRemainingMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown_remaining_ms: Option<u64>,
}

impl Model {
    /// An entry with OpenAI's fields only.
    pub fn new(id: impl Into<String>, created: u64) -> Model {
        Model {
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: "ray".into(),
            aliases: Vec::new(),
            role: None,
            default: None,
            state: None,
            reason: None,
            context_window: None,
            max_output_tokens: None,
            failures: None,
            cooldown_remaining_ms: None,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiError,
}

/// The inner object of [`OpenAiErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiError {
    /// Human-readable explanation.
    pub message: String,
    /// The class: `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Ray's stable error code (`queue_full`, `unsupported_parameter`, ...).
    pub code: Option<String>,
    /// The parameter at fault, when one is.
    pub param: Option<String>,
}

impl OpenAiErrorBody {
    /// A Ray error in OpenAI's shape; the HTTP status and `Retry-After` stay Ray's.
    pub fn from_error(error: &RayError) -> OpenAiErrorBody {
        let status = error.code().status();
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "service_unavailable_error",
            _ => "server_error",
        };
        OpenAiErrorBody {
            error: OpenAiError {
                message: error.message().to_string(),
                kind: kind.into(),
                code: Some(error.code().as_str().into()),
                param: error
                    .details()
                    .and_then(|d| d["param"].as_str())
                    .map(String::from),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> Result<InferRequest, RayError> {
        serde_json::from_str::<ChatCompletionRequest>(json)
            .map_err(|e| RayError::invalid_request(e.to_string()))?
            .to_infer()
    }

    #[test]
    fn a_plain_chat_request_becomes_system_input_and_limits() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]}],
                "max_completion_tokens":12,"temperature":0,"top_p":0.5,"seed":3,"stop":"END",
                "response_format":{"type":"json_object"},"n":1,"presence_penalty":0,"user":"u1",
                "stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(request.system.as_deref(), Some("Be brief."));
        assert_eq!(request.input.as_deref(), Some("Hello"));
        assert_eq!(request.max_tokens, Some(12));
        assert_eq!(request.stop, Some(vec!["END".to_string()]));
        assert_eq!(
            request.response_format.map(|f| f.kind),
            Some(ResponseFormatKind::JsonObject)
        );
        assert_eq!(request.stream, Some(true));
        assert!(request.history.is_none());
    }

    #[test]
    fn unsupported_parameters_are_named() {
        for (json, param) in [
            (r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#, "n"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{}]}"#,
                "tools",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
                "logprobs",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"frobnicate":1}"#,
                "frobnicate",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#,
                "response_format.type",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].role",
            ),
        ] {
            let error = chat(json).unwrap_err();
            assert_eq!(error.code(), ErrorCode::UnsupportedParameter, "{json}");
            assert_eq!(error.details().unwrap()["param"], param, "{json}");
        }
    }

    #[test]
    fn conversations_must_end_with_the_user() {
        assert!(chat(r#"{"messages":[]}"#).is_err());
        assert!(chat(r#"{"messages":[{"role":"system","content":"s"}]}"#).is_err());
        let error = chat(
            r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
        )
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::UnsupportedParameter);
        let error = chat(r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#)
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
    }

    #[test]
    fn legacy_completions_take_one_prompt() {
        let parse = |json: &str| {
            serde_json::from_str::<CompletionRequest>(json)
                .unwrap()
                .to_infer()
        };
        assert_eq!(
            parse(r#"{"prompt":["once"],"max_tokens":5}"#)
                .unwrap()
                .input
                .as_deref(),
            Some("once")
        );
        assert!(parse(r#"{"prompt":["a","b"]}"#).is_err());
        assert!(parse(r#"{"prompt":[1,2,3]}"#).is_err());
        assert!(parse(r#"{"prompt":"x","echo":true}"#).is_err());
    }

    #[test]
    fn errors_keep_ray_codes_in_openai_shape() {
        let error = RayError::new(ErrorCode::QueueFull, "full");
        let body = OpenAiErrorBody::from_error(&error);
        assert_eq!(body.error.kind, "service_unavailable_error");
        assert_eq!(body.error.code.as_deref(), Some("queue_full"));
        let body = OpenAiErrorBody::from_error(&RayError::new(ErrorCode::RateLimited, "slow"));
        assert_eq!(body.error.kind, "rate_limit_error");
    }
}
