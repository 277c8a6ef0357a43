//! Generation parameters beyond Ray's own (penalties, logit bias, log probabilities, tools,
//! JSON-schema output), the tool calls and log probabilities a backend answers with, the
//! ranges every sampling parameter must keep, and the clamps the native API still applies.
//!
//! The OpenAI-compatible routes refuse a value outside its range (400 naming the parameter
//! and the limit); `/v1/infer` keeps the clamps its existing clients rely on and reports each
//! one in `diagnostics.clamped`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RayError;

/// Ranges of the sampling parameters, as documented in `docs/api.md`.
pub mod ranges {
    /// Lowest temperature.
    pub const TEMPERATURE_MIN: f64 = 0.0;
    /// Highest temperature.
    pub const TEMPERATURE_MAX: f64 = 2.0;
    /// Lowest top-p this gateway samples with.
    pub const TOP_P_MIN: f64 = 0.1;
    /// Highest top-p.
    pub const TOP_P_MAX: f64 = 1.0;
    /// Bound of `presence_penalty` and `frequency_penalty` (either sign).
    pub const PENALTY_MAX_ABS: f64 = 2.0;
    /// Bound of a `logit_bias` value (either sign).
    pub const LOGIT_BIAS_MAX_ABS: f64 = 100.0;
    /// Most `logit_bias` entries.
    pub const LOGIT_BIAS_MAX_ENTRIES: usize = 300;
    /// Highest `top_logprobs`.
    pub const TOP_LOGPROBS_MAX: u32 = 20;
    /// Most tools in one request.
    pub const TOOLS_MAX: usize = 128;
    /// Longest JSON text of the tools, or of a response schema, in bytes.
    pub const SCHEMA_MAX_BYTES: usize = 64 * 1024;
}

/// `response_format: {"type": "json_schema", "json_schema": {...}}`: the schema the answer
/// must follow, enforced by the backend's grammar and checked by Ray before it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// A name for the schema (letters, digits, `_` and `-`, at most 64).
    pub name: String,
    /// What the schema is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema (an object).
    pub schema: Value,
    /// OpenAI's strict mode. The backend's grammar always enforces the schema; Ray checks the
    /// answer against it either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Generation parameters passed through to backends that support them. Empty (all `None`)
/// for a plain request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationExtensions {
    /// Penalty on tokens already present, in `[-2, 2]`.
    pub presence_penalty: Option<f64>,
    /// Penalty by how often a token appeared, in `[-2, 2]`.
    pub frequency_penalty: Option<f64>,
    /// Token id (as a decimal string) to a bias in `[-100, 100]`.
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Return the log probability of each output token.
    pub logprobs: Option<bool>,
    /// Also return the most likely alternatives at each position (0 to 20).
    pub top_logprobs: Option<u32>,
    /// Tools the model may call, in OpenAI's shape (`{"type":"function","function":{...}}`).
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or `{"type":"function","function":{"name":...}}`.
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools in one answer.
    pub parallel_tool_calls: Option<bool>,
    /// The schema the answer must follow (`response_format` `json_schema`).
    pub json_schema: Option<JsonSchemaFormat>,
}

impl GenerationExtensions {
    /// Whether nothing is set: the request is a plain one.
    pub fn is_empty(&self) -> bool {
        *self == GenerationExtensions::default()
    }

    /// Whether the request offers tools (and does not turn them off with `tool_choice: none`).
    pub fn uses_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Every range these parameters break, as `field: message`, with native (camelCase)
    /// field names.
    pub fn problems(&self) -> Vec<String> {
        use ranges::*;
        let mut problems = Vec::new();
        for (field, value) in [
            ("presencePenalty", self.presence_penalty),
            ("frequencyPenalty", self.frequency_penalty),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v.abs() <= PENALTY_MAX_ABS)
            {
                problems.push(format!(
                    "{field}: must be between -{PENALTY_MAX_ABS} and {PENALTY_MAX_ABS}, got {v}"
                ));
            }
        }
        if let Some(bias) = &self.logit_bias {
            if bias.len() > LOGIT_BIAS_MAX_ENTRIES {
                problems.push(format!(
                    "logitBias: must have at most {LOGIT_BIAS_MAX_ENTRIES} entries, got {}",
                    bias.len()
                ));
            }
            for (token, value) in bias {
                if token.parse::<u32>().is_err() {
                    problems.push(format!(
                        "logitBias: key {token:?} must be a token id (a whole number)"
                    ));
                }
                if !(value.is_finite() && value.abs() <= LOGIT_BIAS_MAX_ABS) {
                    problems.push(format!(
                        "logitBias.{token}: must be between -{LOGIT_BIAS_MAX_ABS} and \
                         {LOGIT_BIAS_MAX_ABS}, got {value}"
                    ));
                }
            }
        }
        if let Some(top) = self.top_logprobs {
            if top > TOP_LOGPROBS_MAX {
                problems.push(format!(
                    "topLogprobs: must be between 0 and {TOP_LOGPROBS_MAX}, got {top}"
                ));
            }
            if self.logprobs != Some(true) {
                problems.push("topLogprobs: requires logprobs: true".into());
            }
        }
        if let Some(tools) = &self.tools {
            if tools.len() > TOOLS_MAX {
                problems.push(format!(
                    "tools: must have at most {TOOLS_MAX} entries, got {}",
                    tools.len()
                ));
            }
            for (i, tool) in tools.iter().enumerate() {
                if tool["type"] != "function" {
                    problems.push(format!("tools[{i}].type: must be \"function\""));
                }
                match tool["function"]["name"].as_str() {
                    Some(name) if valid_name(name) => {}
                    _ => problems.push(format!(
                        "tools[{i}].function.name: must be 1 to 64 letters, digits, _ or -"
                    )),
                }
                let parameters = &tool["function"]["parameters"];
                if !(parameters.is_null() || parameters.is_object()) {
                    problems.push(format!(
                        "tools[{i}].function.parameters: must be a JSON Schema object"
                    ));
                }
            }
            if serde_json::to_string(tools).map_or(0, |t| t.len()) > SCHEMA_MAX_BYTES {
                problems.push(format!(
                    "tools: must be at most {SCHEMA_MAX_BYTES} bytes of JSON"
                ));
            }
        }
        if let Some(choice) = &self.tool_choice {
            let valid = match choice {
                Value::String(s) => matches!(s.as_str(), "none" | "auto" | "required"),
                Value::Object(_) => {
                    choice["type"] == "function" && choice["function"]["name"].is_string()
                }
                _ => false,
            };
            if !valid {
                problems.push(
                    "toolChoice: must be \"none\", \"auto\", \"required\" or \
                     {\"type\":\"function\",\"function\":{\"name\":...}}"
                        .into(),
                );
            } else if !self.uses_tools() && choice != "none" {
                problems.push("toolChoice: requires tools".into());
            } else if let Some(name) = choice["function"]["name"].as_str()
                && !self
                    .tools
                    .iter()
                    .flatten()
                    .any(|t| t["function"]["name"] == name)
            {
                problems.push(format!(
                    "toolChoice: names the function {name:?}, which is not in tools"
                ));
            }
        }
        if self.parallel_tool_calls.is_some() && !self.uses_tools() {
            problems.push("parallelToolCalls: requires tools".into());
        }
        if let Some(format) = &self.json_schema {
            if !valid_name(&format.name) {
                problems.push(
                    "responseFormat.json_schema.name: must be 1 to 64 letters, digits, _ or -"
                        .into(),
                );
            }
            if !format.schema.is_object() {
                problems.push("responseFormat.json_schema.schema: must be an object".into());
            } else if let Err(error) = crate::json_schema::check_supported(&format.schema) {
                problems.push(format!("responseFormat.json_schema.schema: {error}"));
            }
            if serde_json::to_string(&format.schema).map_or(0, |t| t.len()) > SCHEMA_MAX_BYTES {
                problems.push(format!(
                    "responseFormat.json_schema.schema: must be at most {SCHEMA_MAX_BYTES} bytes \
                     of JSON"
                ));
            }
        }
        problems
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A tool call the model made, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ToolCall {
    /// The call's id, to answer with a `tool` message.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// A request parameter the native API brought into range instead of refusing it (its
/// documented behaviour), reported in `diagnostics.clamped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterClamp {
    /// The field, as the request named it (`maxTokens`, `temperature`, `topP`).
    pub param: String,
    /// The value sent.
    pub requested: f64,
    /// The value used.
    pub applied: f64,
    /// The limit, in words: `model.maxOutputTokens (128)`, `[0, 2]`.
    pub limit: String,
}

/// A parameter out of its range on an OpenAI-compatible route: `400 invalid_request` naming
/// the parameter and the limit (`details.param`, `details.limit`).
pub fn out_of_range(param: &str, limit: &str, got: impl std::fmt::Display) -> RayError {
    RayError::invalid_request(format!("{param}: must be {limit}, got {got}"))
        .with_details(serde_json::json!({ "param": param, "limit": limit }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_have_no_extensions_and_no_problems() {
        let plain = GenerationExtensions::default();
        assert!(plain.is_empty());
        assert!(plain.problems().is_empty());
    }

    #[test]
    fn each_range_is_named() {
        let cases: Vec<(GenerationExtensions, &str)> = vec![
            (
                GenerationExtensions {
                    presence_penalty: Some(2.5),
                    ..Default::default()
                },
                "presencePenalty",
            ),
            (
                GenerationExtensions {
                    logit_bias: Some([("x".to_string(), 1.0)].into()),
                    ..Default::default()
                },
                "logitBias",
            ),
            (
                GenerationExtensions {
                    logit_bias: Some([("15".to_string(), 101.0)].into()),
                    ..Default::default()
                },
                "logitBias.15",
            ),
            (
                GenerationExtensions {
                    logprobs: Some(true),
                    top_logprobs: Some(21),
                    ..Default::default()
                },
                "topLogprobs",
            ),
            (
                GenerationExtensions {
                    tool_choice: Some(Value::from("required")),
                    ..Default::default()
                },
                "toolChoice",
            ),
            (
                GenerationExtensions {
                    tools: Some(vec![serde_json::json!({"type":"function","function":{}})]),
                    ..Default::default()
                },
                "tools[0].function.name",
            ),
        ];
        for (extensions, field) in cases {
            let problems = extensions.problems();
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{field}:"))),
                "{field}: {problems:?}"
            );
        }
    }
}
