//! The generation parameters the OpenAI routes pass on to the backend (`n`, penalties, logit
//! bias, log probabilities, tools), each checked with OpenAI's name and range.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{invalid, unsupported};
use crate::error::RayError;
use crate::wire::InferRequest;
use crate::wire::generation::out_of_range;

/// The generation parameters passed on to the backend, with OpenAI's names and ranges: each
/// present value is checked here, so a bad one is a 400 naming it.
#[derive(Debug, Default)]
pub(super) struct Extensions {
    pub(super) n: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<BTreeMap<String, f64>>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
}

pub(super) fn extensions_of(other: &BTreeMap<String, Value>) -> Result<Extensions, RayError> {
    use crate::wire::generation::ranges::*;
    let present = |name: &str| other.get(name).filter(|v| !v.is_null());
    let mut out = Extensions::default();
    if let Some(n) = present("n") {
        out.n = Some(
            n.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| out_of_range("n", "a whole number of at least 1", n))?,
        );
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(value) = present(name) {
            let limit = format!("between -{PENALTY_MAX_ABS} and {PENALTY_MAX_ABS}");
            let v = value
                .as_f64()
                .filter(|v| v.abs() <= PENALTY_MAX_ABS)
                .ok_or_else(|| out_of_range(name, &limit, value))?;
            if name == "presence_penalty" {
                out.presence_penalty = Some(v);
            } else {
                out.frequency_penalty = Some(v);
            }
        }
    }
    if let Some(value) = present("logit_bias") {
        let map = value.as_object().ok_or_else(|| {
            invalid(
                "logit_bias",
                "must be an object of token ids to biases".into(),
            )
        })?;
        if map.len() > LOGIT_BIAS_MAX_ENTRIES {
            return Err(out_of_range(
                "logit_bias",
                &format!("at most {LOGIT_BIAS_MAX_ENTRIES} entries"),
                map.len(),
            ));
        }
        let mut bias = BTreeMap::new();
        for (token, v) in map {
            if token.parse::<u32>().is_err() {
                return Err(invalid(
                    "logit_bias",
                    format!("key {token:?} must be a token id (a whole number)"),
                ));
            }
            let limit = format!("between -{LOGIT_BIAS_MAX_ABS} and {LOGIT_BIAS_MAX_ABS}");
            let v = v
                .as_f64()
                .filter(|v| v.abs() <= LOGIT_BIAS_MAX_ABS)
                .ok_or_else(|| out_of_range(&format!("logit_bias.{token}"), &limit, v))?;
            bias.insert(token.clone(), v);
        }
        out.logit_bias = Some(bias);
    }
    if let Some(value) = present("logprobs") {
        out.logprobs = Some(
            value
                .as_bool()
                .ok_or_else(|| invalid("logprobs", "must be a boolean".into()))?,
        );
    }
    if let Some(value) = present("top_logprobs") {
        let limit = format!("between 0 and {TOP_LOGPROBS_MAX}");
        let top = value
            .as_u64()
            .filter(|t| *t <= u64::from(TOP_LOGPROBS_MAX))
            .ok_or_else(|| out_of_range("top_logprobs", &limit, value))?;
        if out.logprobs != Some(true) {
            return Err(invalid("top_logprobs", "requires logprobs: true".into()));
        }
        out.top_logprobs = Some(top as u32);
    }
    if let Some(value) = present("tools") {
        let tools = value
            .as_array()
            .ok_or_else(|| invalid("tools", "must be an array of tools".into()))?;
        if tools.len() > TOOLS_MAX {
            return Err(out_of_range(
                "tools",
                &format!("at most {TOOLS_MAX} entries"),
                tools.len(),
            ));
        }
        for (i, tool) in tools.iter().enumerate() {
            if tool["type"] != "function" {
                return Err(unsupported(
                    &format!("tools[{i}].type"),
                    "only function tools are supported",
                ));
            }
            if !tool["function"]["name"].is_string() {
                return Err(invalid(
                    &format!("tools[{i}].function.name"),
                    "must be a string".into(),
                ));
            }
        }
        out.tools = (!tools.is_empty()).then(|| tools.clone());
    }
    if let Some(value) = present("tool_choice") {
        out.tool_choice = Some(value.clone());
    }
    if let Some(value) = present("parallel_tool_calls") {
        out.parallel_tool_calls = Some(
            value
                .as_bool()
                .ok_or_else(|| invalid("parallel_tool_calls", "must be a boolean".into()))?,
        );
    }
    Ok(out)
}

impl Extensions {
    /// Copies the parameters into Ray's request (`n` stays with the door).
    pub(super) fn apply(self, request: &mut InferRequest) {
        request.presence_penalty = self.presence_penalty;
        request.frequency_penalty = self.frequency_penalty;
        request.logit_bias = self.logit_bias;
        request.logprobs = self.logprobs.filter(|l| *l);
        request.top_logprobs = self.top_logprobs;
        request.tools = self.tools;
        request.tool_choice = self.tool_choice;
        request.parallel_tool_calls = self.parallel_tool_calls;
    }
}
