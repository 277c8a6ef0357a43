//! `POST /v1/infer`: the request, its limits, and the response.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

mod diagnostics;
mod write;

use diagnostics::serialize_diagnostics;
pub use diagnostics::*;

use crate::error::RayError;
use crate::wire::generation::{GenerationExtensions, JsonSchemaFormat, ParameterClamp, ToolCall};

/// Limits on the fields of an [`InferRequest`], as documented in `docs/api.md`.
pub mod limits {
    /// Most entries in `stop`.
    pub const STOP_MAX_ENTRIES: usize = 16;
    /// Longest `stop` entry in chars.
    pub const STOP_MAX_CHARS: usize = 256;
    /// Longest `dedupeKey` in chars.
    pub const DEDUPE_KEY_MAX_CHARS: usize = 512;
    /// Most `metadata` entries.
    pub const METADATA_MAX_ENTRIES: usize = 32;
    /// Longest `metadata` key in chars.
    pub const METADATA_KEY_MAX_CHARS: usize = 128;
    /// Longest `metadata` value in chars.
    pub const METADATA_VALUE_MAX_CHARS: usize = 1024;
    /// Longest `templateId` in chars.
    pub const TEMPLATE_ID_MAX_CHARS: usize = 128;
    /// Longest `model` in chars.
    pub const MODEL_MAX_CHARS: usize = 256;
    /// Longest `task` in chars.
    pub const TASK_MAX_CHARS: usize = 64;
    /// Most `templateVariables` entries.
    pub const TEMPLATE_VARIABLES_MAX_ENTRIES: usize = 32;
    /// Longest `templateVariables` key in chars.
    pub const TEMPLATE_VARIABLE_KEY_MAX_CHARS: usize = 128;
    /// Longest `templateVariables` value in chars (numbers and booleans as written).
    pub const TEMPLATE_VARIABLE_VALUE_MAX_CHARS: usize = 16_384;
    /// Largest integer a `seed` may be (JavaScript's safe integer range).
    pub const SEED_MAX_ABS: i64 = 9_007_199_254_740_991;
    /// Metadata keys refused because JavaScript clients treat them specially.
    pub const RESERVED_METADATA_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];
    /// Most earlier turns in `history`.
    pub const HISTORY_MAX_TURNS: usize = 256;
}

/// A request to `POST /v1/infer` (and the request part of `POST /v1/jobs`).
///
/// Every field is optional, but the request needs either `input` or `templateId`. Numeric fields
/// are lenient the way the existing Ray is: `maxTokens` is floored and later clamped to
/// `[1, model.maxOutputTokens]`, `temperature` is clamped to `[0, 2]` and `topP` to `[0.1, 1]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferRequest {
    /// The prompt. Trimmed; must not be empty unless `templateId` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The system prompt. Trimmed; dropped when blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Output tokens at most; default `model.maxOutputTokens` (or the template's default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_tokens"
    )]
    #[schemars(with = "Option<f64>")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, clamped to `[0, 2]`; default 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, clamped to `[0.1, 1]`; default 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed, a whole number within ±(2^53 − 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings: 1 to 16 entries, each 1 to 256 chars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Ask for plain text or a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Read and write the result cache (and join identical in-flight requests); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// Explicit in-flight dedupe key (at most 512 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// String labels (at most 32). `promptFamily`, `promptLane` and `rayPromptFormat` have
    /// meaning to Ray.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// A built-in template; cannot be combined with `input` or `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Values for the template's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, TemplateValue>>,
    /// Answer with Server-Sent Events as tokens are generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `true`: the response carries the full `diagnostics` block; `false`: its summary.
    /// Absent: the `X-Ray-Diagnostics` header decides, else `telemetry.responseDiagnostics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<bool>,
    /// Earlier turns of a conversation, oldest first, before `input` (the user's latest
    /// message). New in this version; the OpenAI-compatible chat route fills it from
    /// `messages`. Cannot be combined with `templateId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ChatTurn>>,
    /// The model to run on: a configured id or alias, or `auto` for routing by the config's
    /// `routing.rules`. Default: the routing rules, then `defaultModel`. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the request is for (at most 64 chars), matched by `routing.rules[].tasks`, e.g.
    /// `classify`. The OpenAI routes take it from the `X-Ray-Task` header. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Penalty on tokens already present, in `[-2, 2]` (new; passed to the backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Penalty by how often a token appeared, in `[-2, 2]` (new; passed to the backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Token id (a decimal string) to a bias in `[-100, 100]`, at most 300 entries (new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Return each output token's log probability in `logprobs` (new; chat backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`, the 0 to 20 most likely alternatives at each position (new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Tools the model may call, in OpenAI's shape (new; backends that support tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// `none`, `auto`, `required` or `{"type":"function","function":{"name":...}}` (new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub tool_choice: Option<serde_json::Value>,
    /// Whether the model may call several tools at once (new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The priority class to run in, optionally with a level: `"interactive"` (the default of
    /// HTTP requests), `"batch"` (the default of jobs), `"background"`, or `"batch:3"` (levels
    /// 0 to 9, higher first). Never above the API key's `priority.apiKeys[].maxClass`: a
    /// request asking for more runs in the highest class it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatTurn {
    /// Who said it.
    pub role: TurnRole,
    /// What was said.
    pub content: String,
    /// The tools an assistant turn called (new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` turn answers (new; required on `tool` turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatTurn {
    /// A plain turn of `role` saying `content`.
    pub fn new(role: TurnRole, content: impl Into<String>) -> ChatTurn {
        ChatTurn {
            role,
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// The speaker of a [`ChatTurn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnRole {
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering an assistant turn's call (new).
    Tool,
}

impl TurnRole {
    /// `user`, `assistant` or `tool`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TurnRole::User => "user",
            TurnRole::Assistant => "assistant",
            TurnRole::Tool => "tool",
        }
    }
}

/// Accepts any finite JSON number for a token count, flooring it and clamping it into `u32`.
fn lenient_tokens<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value: Option<f64> = Option::deserialize(deserializer)?;
    match value {
        None => Ok(None),
        Some(v) if !v.is_finite() => Err(serde::de::Error::custom("must be a finite number")),
        Some(v) => Ok(Some(v.floor().clamp(0.0, f64::from(u32::MAX)) as u32)),
    }
}

/// The requested output format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: ResponseFormatKind,
    /// With `json_schema`: the schema the answer must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

impl ResponseFormat {
    /// A format of `kind` without a schema.
    pub fn of(kind: ResponseFormatKind) -> ResponseFormat {
        ResponseFormat {
            kind,
            json_schema: None,
        }
    }
}

/// The kinds of [`ResponseFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatKind {
    /// Free text.
    Text,
    /// One JSON object.
    JsonObject,
    /// One JSON value following a schema (`json_schema`), enforced by the backend's grammar
    /// and checked by Ray.
    JsonSchema,
}

/// A template variable value: a string, number or boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TemplateValue {
    /// A string.
    String(String),
    /// A number, rendered as written.
    Number(serde_json::Number),
    /// A boolean, rendered as `true` or `false`.
    Bool(bool),
}

impl TemplateValue {
    /// The value as it is substituted into a template.
    pub fn render(&self) -> String {
        match self {
            TemplateValue::String(s) => s.clone(),
            TemplateValue::Number(n) => n.to_string(),
            TemplateValue::Bool(b) => b.to_string(),
        }
    }
}

impl InferRequest {
    /// A request for `input` with every other field left to the defaults.
    pub fn new(input: impl Into<String>) -> InferRequest {
        InferRequest {
            input: Some(input.into()),
            ..InferRequest::default()
        }
    }

    /// The same request asking for `priority` (its `priority` field).
    pub fn with_priority(mut self, priority: super::Priority) -> InferRequest {
        self.priority = Some(priority.to_string());
        self
    }

    /// Whether the conversation ends with tool results for the model to answer (then
    /// `input` may be left out: there is no new user message).
    pub fn answers_tool_calls(&self) -> bool {
        self.history
            .as_ref()
            .and_then(|h| h.last())
            .is_some_and(|turn| turn.role == TurnRole::Tool)
    }

    /// The generation parameters beyond Ray's own, for the backend.
    pub fn extensions(&self) -> GenerationExtensions {
        GenerationExtensions {
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            logprobs: self.logprobs.filter(|l| *l),
            top_logprobs: self.top_logprobs,
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            parallel_tool_calls: self.parallel_tool_calls,
            json_schema: self
                .response_format
                .as_ref()
                .and_then(|f| f.json_schema.clone()),
        }
    }

    /// The values `/v1/infer` brings into range rather than refusing (its documented
    /// behaviour): `maxTokens` to `[1, max_output_tokens]`, `temperature` to `[0, 2]`, `topP`
    /// to `[0.1, 1]`. Each clamp is reported in `diagnostics.clamped`.
    pub fn clamps(&self, max_output_tokens: u32) -> Vec<ParameterClamp> {
        use crate::wire::generation::ranges::*;
        let mut clamps = Vec::new();
        if let Some(max) = self.max_tokens {
            let applied = max.clamp(1, max_output_tokens.max(1));
            if applied != max {
                clamps.push(ParameterClamp {
                    param: "maxTokens".into(),
                    requested: f64::from(max),
                    applied: f64::from(applied),
                    limit: format!("between 1 and model.maxOutputTokens ({max_output_tokens})"),
                });
            }
        }
        for (param, value, min, max) in [
            (
                "temperature",
                self.temperature,
                TEMPERATURE_MIN,
                TEMPERATURE_MAX,
            ),
            ("topP", self.top_p, TOP_P_MIN, TOP_P_MAX),
        ] {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                let applied = value.clamp(min, max);
                if applied != value {
                    clamps.push(ParameterClamp {
                        param: param.into(),
                        requested: value,
                        applied,
                        limit: format!("between {min} and {max}"),
                    });
                }
            }
        }
        clamps
    }

    /// Checks the field limits that do not depend on the config, reporting every problem.
    ///
    /// The error's message names the first problem; `details.problems` lists all of them, each
    /// as `field: message`.
    pub fn validate(&self) -> Result<(), RayError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let message = problems[0].clone();
        Err(RayError::invalid_request(message)
            .with_details(serde_json::json!({ "problems": problems })))
    }

    /// Every limit this request breaks, as `field: message` strings.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push(format!("{field}: {message}"));

        if let Some(model) = &self.model
            && (model.is_empty() || model.chars().count() > MODEL_MAX_CHARS)
        {
            push("model", format!("must be 1 to {MODEL_MAX_CHARS} chars"));
        }
        if let Some(task) = &self.task
            && (task.is_empty() || task.chars().count() > TASK_MAX_CHARS)
        {
            push("task", format!("must be 1 to {TASK_MAX_CHARS} chars"));
        }
        let has_input = self.input.as_deref().is_some_and(|s| !s.trim().is_empty());
        if let Some(template_id) = &self.template_id {
            if self.input.is_some() || self.system.is_some() {
                push(
                    "templateId",
                    "cannot be combined with input or system".into(),
                );
            }
            if template_id.trim().is_empty() {
                push("templateId", "must not be empty".into());
            }
            if template_id.chars().count() > TEMPLATE_ID_MAX_CHARS {
                push(
                    "templateId",
                    format!("must be at most {TEMPLATE_ID_MAX_CHARS} chars"),
                );
            }
        } else if !has_input && !self.answers_tool_calls() {
            push("input", "input must be a non-empty string".into());
        }
        if let Some(history) = &self.history {
            for (i, turn) in history.iter().enumerate() {
                if turn.role == TurnRole::Tool && turn.tool_call_id.is_none() {
                    push(
                        &format!("history[{i}].toolCallId"),
                        "is required on tool turns".into(),
                    );
                }
                if turn.tool_calls.is_some() && turn.role != TurnRole::Assistant {
                    push(
                        &format!("history[{i}].toolCalls"),
                        "is only allowed on assistant turns".into(),
                    );
                }
            }
            if self.template_id.is_some() {
                push("history", "cannot be combined with templateId".into());
            }
            if history.len() > HISTORY_MAX_TURNS {
                push(
                    "history",
                    format!(
                        "must have at most {HISTORY_MAX_TURNS} turns, got {}",
                        history.len()
                    ),
                );
            }
        }
        if self.template_variables.is_some() && self.template_id.is_none() {
            push("templateVariables", "requires templateId".into());
        }
        if let Some(vars) = &self.template_variables {
            if vars.len() > TEMPLATE_VARIABLES_MAX_ENTRIES {
                push(
                    "templateVariables",
                    format!(
                        "must have at most {TEMPLATE_VARIABLES_MAX_ENTRIES} entries, got {}",
                        vars.len()
                    ),
                );
            }
            for (key, value) in vars {
                if key.chars().count() > TEMPLATE_VARIABLE_KEY_MAX_CHARS {
                    push(
                        "templateVariables",
                        format!(
                            "key {key:?} is longer than {TEMPLATE_VARIABLE_KEY_MAX_CHARS} chars"
                        ),
                    );
                }
                if value.render().chars().count() > TEMPLATE_VARIABLE_VALUE_MAX_CHARS {
                    push(
                        &format!("templateVariables.{key}"),
                        format!("must be at most {TEMPLATE_VARIABLE_VALUE_MAX_CHARS} chars"),
                    );
                }
            }
        }
        for (field, value) in [("temperature", self.temperature), ("topP", self.top_p)] {
            if value.is_some_and(|v| !v.is_finite()) {
                push(field, "must be a finite number".into());
            }
        }
        if let Some(seed) = self.seed
            && !(-SEED_MAX_ABS..=SEED_MAX_ABS).contains(&seed)
        {
            push("seed", format!("must be a safe integer, got {seed}"));
        }
        if let Some(stop) = &self.stop {
            if stop.is_empty() {
                push("stop", "must have at least one entry".into());
            }
            if stop.len() > STOP_MAX_ENTRIES {
                push(
                    "stop",
                    format!(
                        "must have at most {STOP_MAX_ENTRIES} entries, got {}",
                        stop.len()
                    ),
                );
            }
            for (i, entry) in stop.iter().enumerate() {
                if entry.is_empty() {
                    push(&format!("stop[{i}]"), "must not be empty".into());
                } else if entry.chars().count() > STOP_MAX_CHARS {
                    push(
                        &format!("stop[{i}]"),
                        format!("must be at most {STOP_MAX_CHARS} chars"),
                    );
                }
            }
        }
        if let Some(key) = &self.dedupe_key {
            if key.is_empty() {
                push("dedupeKey", "must not be empty".into());
            } else if key.chars().count() > DEDUPE_KEY_MAX_CHARS {
                push(
                    "dedupeKey",
                    format!("must be at most {DEDUPE_KEY_MAX_CHARS} chars"),
                );
            }
        }
        if let Some(metadata) = &self.metadata {
            if metadata.len() > METADATA_MAX_ENTRIES {
                push(
                    "metadata",
                    format!(
                        "must have at most {METADATA_MAX_ENTRIES} entries, got {}",
                        metadata.len()
                    ),
                );
            }
            for (key, value) in metadata {
                if RESERVED_METADATA_KEYS.contains(&key.as_str()) {
                    push("metadata", format!("key {key:?} is reserved"));
                }
                if key.is_empty() || key.chars().count() > METADATA_KEY_MAX_CHARS {
                    push(
                        "metadata",
                        format!("key {key:?} must be 1 to {METADATA_KEY_MAX_CHARS} chars"),
                    );
                }
                if value.chars().count() > METADATA_VALUE_MAX_CHARS {
                    push(
                        &format!("metadata.{key}"),
                        format!("must be at most {METADATA_VALUE_MAX_CHARS} chars"),
                    );
                }
            }
        }
        problems.extend(self.extensions().problems());
        if let Some(format) = &self.response_format {
            match (format.kind, &format.json_schema) {
                (ResponseFormatKind::JsonSchema, None) => problems
                    .push("responseFormat.json_schema: is required with type json_schema".into()),
                (ResponseFormatKind::Text | ResponseFormatKind::JsonObject, Some(_)) => problems
                    .push(
                        "responseFormat.json_schema: is only allowed with type json_schema".into(),
                    ),
                _ => {}
            }
        }
        problems
    }
}

/// The response of `POST /v1/infer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferResponse {
    /// `req_` followed by 16 hex chars.
    pub id: String,
    /// `model.id` from the config.
    pub model: String,
    /// The generated text.
    pub output: String,
    /// Size of the prompt and completion.
    pub usage: Usage,
    /// Served from the result cache.
    pub cached: bool,
    /// Shared with an identical request that was already in flight.
    pub deduplicated: bool,
    /// Time spent waiting for admission, in ms.
    pub queue_time_ms: u64,
    /// Time from arrival to answer, in ms.
    pub latency_ms: u64,
    /// A degradation clamp changed the request.
    pub degraded: bool,
    /// Why the request was shaped and routed the way it was, in full or as a summary as
    /// `diagnostics.detail` says. (Boxed: it is most of the response's size, and responses
    /// move through several async layers.)
    #[serde(serialize_with = "serialize_diagnostics")]
    pub diagnostics: Box<Diagnostics>,
    /// Why generation stopped: `stop` (end of sequence or a stop string), `length`, or
    /// `tool_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// RFC 3339 time of the answer.
    pub created_at: String,
    /// The tools the model called (a request with `tools` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Each output token's log probability, in OpenAI's `logprobs.content` shape (a request
    /// with `logprobs` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub logprobs: Option<Vec<serde_json::Value>>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended the sequence or hit a stop string.
    Stop,
    /// `maxTokens` was reached.
    Length,
    /// The model called one or more tools (`toolCalls`).
    ToolCalls,
}

/// Size of the prompt and completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// Always present: character counts.
    pub chars: CountTriple,
    /// Token counts, when the backend reports them or the prompt was tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<CountTriple>,
}

/// `prompt`, `completion` and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CountTriple {
    /// Prompt size.
    pub prompt: u64,
    /// Completion size.
    pub completion: u64,
    /// `prompt + completion`.
    pub total: u64,
}

impl CountTriple {
    /// A triple whose total is the sum of the parts.
    pub fn new(prompt: u64, completion: u64) -> CountTriple {
        CountTriple {
            prompt,
            completion,
            total: prompt + completion,
        }
    }
}

#[cfg(test)]
mod tests;
