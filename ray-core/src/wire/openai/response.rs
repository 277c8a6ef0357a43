//! The responses of the OpenAI door: completions, chunks, the model list and the error shape,
//! built from Ray's own [`InferResponse`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RayError;
use crate::wire::generation::ToolCall;
use crate::wire::{FinishReason, InferResponse};

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

impl OpenAiUsage {
    /// The usage of `n` generations of one prompt: the prompt once, the completions summed.
    pub fn sum(responses: &[InferResponse]) -> OpenAiUsage {
        let mut usage = responses.first().map(OpenAiUsage::of).unwrap_or_default();
        for response in responses.iter().skip(1) {
            usage.completion_tokens += OpenAiUsage::of(response).completion_tokens;
        }
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        usage
    }
}

/// `stop`, `length` or `tool_calls`, as OpenAI names them.
pub fn finish_reason(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
        Some(FinishReason::Stop) | None => "stop",
    }
}

/// An assistant message in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text; `null` when the model only called tools, as OpenAI answers.
    pub content: Option<String>,
    /// The tools the model called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// 0 to `n` − 1.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: Option<String>,
    /// `{"content": [...]}` with `logprobs: true`, else null.
    pub logprobs: Option<Value>,
}

/// OpenAI's `logprobs` object of a choice: `{"content": [...]}`.
pub fn logprobs_of(response: &InferResponse) -> Option<Value> {
    response
        .logprobs
        .as_ref()
        .map(|content| serde_json::json!({ "content": content }))
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
        ChatCompletion::from_choices(std::slice::from_ref(response), created)
    }

    /// Ray's responses to the `n` generations of one request, as its choices: the id is the
    /// first's, the prompt is counted once and the completions are summed.
    pub fn from_choices(responses: &[InferResponse], created: u64) -> ChatCompletion {
        let first = &responses[0];
        ChatCompletion {
            id: format!("chatcmpl-{}", first.id),
            object: "chat.completion".into(),
            created,
            model: first.model.clone(),
            choices: responses
                .iter()
                .enumerate()
                .map(|(i, response)| ChatChoice {
                    index: i as u32,
                    message: AssistantMessage {
                        role: "assistant".into(),
                        content: (!response.output.is_empty()
                            || response.tool_calls.as_ref().is_none_or(Vec::is_empty))
                        .then(|| response.output.clone()),
                        tool_calls: response.tool_calls.clone(),
                    },
                    finish_reason: Some(finish_reason(response.finish_reason).into()),
                    logprobs: logprobs_of(response),
                })
                .collect(),
            usage: OpenAiUsage::sum(responses),
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
    /// Tool calls, each with its `index` (Ray sends each call whole, in one delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
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
        Completion::from_choices(std::slice::from_ref(response), created)
    }

    /// Ray's responses to the `n` generations of one prompt, as its choices.
    pub fn from_choices(responses: &[InferResponse], created: u64) -> Completion {
        let first = &responses[0];
        Completion {
            id: format!("cmpl-{}", first.id),
            object: "text_completion".into(),
            created,
            model: first.model.clone(),
            choices: responses
                .iter()
                .enumerate()
                .map(|(i, response)| CompletionChoice {
                    index: i as u32,
                    text: response.output.clone(),
                    finish_reason: Some(finish_reason(response.finish_reason).into()),
                    logprobs: None,
                })
                .collect(),
            usage: Some(OpenAiUsage::sum(responses)),
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
    /// Ray: a managed model's lifecycle (state, resident and footprint MiB, last load time,
    /// load, unload and eviction counts), under the `lifecycle` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<crate::wire::ModelLifecycle>,
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
            lifecycle: None,
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
