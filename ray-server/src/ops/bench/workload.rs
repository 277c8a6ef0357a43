//! Workloads: `/v1/infer` requests, one per JSONL line (or a JSON array), each with optional
//! `benchmark` assertions on its output, and what a direct run sends to the backend instead.

use std::collections::BTreeMap;
use std::path::Path;

use ray_core::wire::{InferRequest, ResponseFormatKind};
use serde::Deserialize;
use serde_json::Value;

/// Output checks of one workload item (the existing Ray's names). Keys not listed here are
/// refused when the workload is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assertions {
    /// The output must be a JSON object.
    #[serde(default)]
    pub requires_valid_json: bool,
    /// At least this many characters.
    #[serde(default)]
    pub min_output_chars: Option<usize>,
    /// At most this many characters.
    #[serde(default)]
    pub max_output_chars: Option<usize>,
    /// Phrases that must appear (case-insensitive).
    #[serde(default)]
    pub must_contain: Vec<String>,
    /// Phrases that must not appear (case-insensitive).
    #[serde(default)]
    pub must_not_contain: Vec<String>,
    /// The output must not repeat the start of the prompt.
    #[serde(default)]
    pub no_prompt_echo: bool,
    /// None of the request's stop strings may appear.
    #[serde(default)]
    pub stop_must_not_appear: bool,
    /// An email body must ask for something (a question or a request to reply, call, meet).
    #[serde(default)]
    pub requires_call_to_action: bool,
    /// An email body must not carry a subject line, a greeting placeholder or a sign-off.
    #[serde(default)]
    pub no_subject_greeting_signoff: bool,
}

impl Assertions {
    /// Whether any check is set.
    pub fn any(&self) -> bool {
        *self != Assertions::default()
    }
}

/// One item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The request body sent to `/v1/infer` (without `benchmark`).
    pub request: Value,
    /// The same request, typed.
    pub typed: InferRequest,
    /// Its output checks.
    pub assertions: Assertions,
}

/// A workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The items, in file order.
    pub items: Vec<Item>,
}

/// Why a workload cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WorkloadError {
    /// The file.
    pub path: String,
    /// What is wrong, with the line when there is one.
    pub message: String,
}

impl Workload {
    /// Reads a JSONL file (one request per line; blank lines and `#` comments skipped) or a
    /// JSON array.
    pub fn read(path: &Path) -> Result<Workload, WorkloadError> {
        let error = |message: String| WorkloadError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Workload::parse(&text).map_err(error)
    }

    /// Parses the text of a workload.
    pub fn parse(text: &str) -> Result<Workload, String> {
        let values: Vec<(usize, Value)> = if text.trim_start().starts_with('[') {
            let array: Vec<Value> =
                serde_json::from_str(text).map_err(|e| format!("not a JSON array: {e}"))?;
            array
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect()
        } else {
            let mut values = Vec::new();
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let value = serde_json::from_str(line)
                    .map_err(|e| format!("line {}: not JSON: {e}", index + 1))?;
                values.push((index + 1, value));
            }
            values
        };
        if values.is_empty() {
            return Err("the workload has no requests".into());
        }
        let mut items = Vec::with_capacity(values.len());
        for (line, mut value) in values {
            let Some(object) = value.as_object_mut() else {
                return Err(format!("item {line}: a request must be a JSON object"));
            };
            let assertions = match object.remove("benchmark") {
                Some(raw) => serde_json::from_value(raw)
                    .map_err(|e| format!("item {line}: benchmark: {e}"))?,
                None => Assertions::default(),
            };
            let typed: InferRequest = serde_json::from_value(value.clone())
                .map_err(|e| format!("item {line}: not a /v1/infer request: {e}"))?;
            items.push(Item {
                request: value,
                typed,
                assertions,
            });
        }
        Ok(Workload { items })
    }
}

/// What an item becomes for a direct run: an OpenAI-compatible chat request.
pub fn chat_request(item: &Item, model: &str, default_max_tokens: u32) -> Result<Value, String> {
    let request = &item.typed;
    let (system, input, template_max, template_format) = match &request.template_id {
        Some(id) => {
            let template = ray_runtime::templates::find(id)
                .ok_or_else(|| format!("unknown templateId {id:?}"))?;
            let rendered = template
                .render(request.template_variables.as_ref())
                .map_err(|e| e.message().to_string())?;
            (
                Some(rendered.system),
                rendered.input,
                Some(template.max_tokens),
                Some(template.response_format),
            )
        }
        None => (
            request.system.clone(),
            request.input.clone().unwrap_or_default(),
            None,
            None,
        ),
    };
    let mut messages = Vec::new();
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        messages.push(serde_json::json!({ "role": "system", "content": system }));
    }
    messages.push(serde_json::json!({ "role": "user", "content": input }));
    let max_tokens = request
        .max_tokens
        .map(|t| t.max(1))
        .or(template_max)
        .unwrap_or(default_max_tokens);
    let mut body = serde_json::json!({
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": request.temperature.unwrap_or(ray_runtime::DEFAULT_TEMPERATURE),
        "top_p": request.top_p.unwrap_or(ray_runtime::DEFAULT_TOP_P),
        "stream": false,
    });
    if let Some(seed) = request.seed {
        body["seed"] = seed.into();
    }
    if let Some(stop) = &request.stop {
        body["stop"] = serde_json::json!(stop);
    }
    let format = request
        .response_format
        .as_ref()
        .map(|f| f.kind)
        .or(template_format);
    if format == Some(ResponseFormatKind::JsonObject) {
        body["response_format"] = serde_json::json!({ "type": "json_object" });
    }
    Ok(body)
}

/// The prompt text of an item (for the echo check).
pub fn prompt_text(item: &Item) -> String {
    match &item.typed.template_id {
        Some(id) => ray_runtime::templates::find(id)
            .and_then(|t| t.render(item.typed.template_variables.as_ref()).ok())
            .map(|r| r.input)
            .unwrap_or_default(),
        None => item.typed.input.clone().unwrap_or_default(),
    }
}

/// Whether the item asks for JSON output.
pub fn wants_json(item: &Item) -> bool {
    let template_json = item
        .typed
        .template_id
        .as_deref()
        .and_then(ray_runtime::templates::find)
        .is_some_and(|t| t.response_format == ResponseFormatKind::JsonObject);
    item.assertions.requires_valid_json
        || template_json
        || item
            .typed
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind == ResponseFormatKind::JsonObject)
}

/// The result of checking one output: the failed checks (with the score each costs) and the
/// score left of 100.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Names of the failed checks.
    pub failures: Vec<&'static str>,
    /// 100 minus the deductions, at least 0.
    pub score: f64,
    /// Whether the output parsed as a JSON object (when JSON was asked for).
    pub valid_json: Option<bool>,
}

const CTA_PHRASES: &[&str] = &[
    "?",
    "let me know",
    "reply",
    "call",
    "chat",
    "meet",
    "schedule",
    "book",
    "open to",
    "worth a",
];

/// Checks `output` against an item's assertions. The deductions follow the existing Ray:
/// invalid JSON 45, prompt echo 35, stop leak 30, email wrapper 25, missing call to action 20,
/// forbidden phrase 20, missing phrase 18, too short or too long 15.
pub fn verdict(item: &Item, output: &str) -> Verdict {
    let a = &item.assertions;
    let lower = output.to_lowercase();
    let mut failures: Vec<(&'static str, f64)> = Vec::new();
    let valid_json = wants_json(item)
        .then(|| serde_json::from_str::<Value>(output.trim()).is_ok_and(|v| v.is_object()));
    if a.requires_valid_json && valid_json == Some(false) {
        failures.push(("invalid_json", 45.0));
    }
    if a.no_prompt_echo {
        let prompt = prompt_text(item).to_lowercase();
        let head: String = prompt.trim().chars().take(48).collect();
        if head.chars().count() >= 16 && lower.contains(&head) {
            failures.push(("prompt_echo", 35.0));
        }
    }
    if a.stop_must_not_appear
        && let Some(stop) = &item.typed.stop
        && stop
            .iter()
            .any(|s| !s.is_empty() && output.contains(s.as_str()))
    {
        failures.push(("stop_leak", 30.0));
    }
    if a.no_subject_greeting_signoff {
        let first = lower.trim_start();
        let wrapped = first.starts_with("subject:")
            || first.starts_with("dear [")
            || first.starts_with("hi [")
            || ["best regards", "kind regards", "sincerely", "[your name]"]
                .iter()
                .any(|p| lower.contains(p));
        if wrapped {
            failures.push(("email_wrapper", 25.0));
        }
    }
    if a.requires_call_to_action && !CTA_PHRASES.iter().any(|p| lower.contains(p)) {
        failures.push(("missing_cta", 20.0));
    }
    if a.must_not_contain
        .iter()
        .any(|p| lower.contains(&p.to_lowercase()))
    {
        failures.push(("forbidden", 20.0));
    }
    if !a
        .must_contain
        .iter()
        .all(|p| lower.contains(&p.to_lowercase()))
    {
        failures.push(("missing", 18.0));
    }
    let chars = output.chars().count();
    if a.min_output_chars.is_some_and(|min| chars < min) {
        failures.push(("too_short", 15.0));
    }
    if a.max_output_chars.is_some_and(|max| chars > max) {
        failures.push(("too_long", 15.0));
    }
    let deducted: f64 = failures.iter().map(|(_, points)| points).sum();
    Verdict {
        failures: failures.into_iter().map(|(name, _)| name).collect(),
        score: (100.0 - deducted).max(0.0),
        valid_json,
    }
}

/// Counts of failed checks by name.
pub type FailureCounts = BTreeMap<&'static str, u64>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn jsonl_and_arrays_with_assertions() {
        let workload = Workload::parse(
            "# a comment\n{\"input\":\"hi\",\"benchmark\":{\"minOutputChars\":3}}\n\n{\"templateId\":\"email.reply_classification.v1\",\"templateVariables\":{\"replyText\":\"ok\"}}\n",
        )
        .unwrap();
        assert_eq!(workload.items.len(), 2);
        assert_eq!(workload.items[0].assertions.min_output_chars, Some(3));
        assert!(workload.items[0].request.get("benchmark").is_none());
        assert!(wants_json(&workload.items[1]));
        let array = Workload::parse(r#"[{"input":"a"},{"input":"b"}]"#).unwrap();
        assert_eq!(array.items.len(), 2);
    }

    #[test]
    fn bad_workloads_name_the_line() {
        assert!(Workload::parse("").unwrap_err().contains("no requests"));
        assert!(
            Workload::parse("{\"input\":\"a\"}\nnope\n")
                .unwrap_err()
                .starts_with("line 2:")
        );
        let error = Workload::parse(r#"{"input":"a","benchmark":{"mustRhyme":true}}"#).unwrap_err();
        assert!(error.contains("mustRhyme"), "{error}");
        let error = Workload::parse(r#"{"inptu":"a"}"#).unwrap_err();
        assert!(error.contains("inptu"), "{error}");
    }

    #[test]
    fn templates_render_for_a_direct_run() {
        let workload = Workload::parse(
            r#"{"templateId":"email.follow_up.v1","templateVariables":{"recipientRole":"CTO","previousTopic":"queues","reasonToReply":"latency"},"seed":7}"#,
        )
        .unwrap();
        let body = chat_request(&workload.items[0], "m", 256).unwrap();
        assert_eq!(body["max_tokens"], 120);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(
            body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("Recipient role: CTO")
        );
        let plain = Workload::parse(r#"{"input":"hello","maxTokens":12}"#).unwrap();
        let body = chat_request(&plain.items[0], "m", 256).unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["max_tokens"], 12);
    }

    #[test]
    fn verdicts_deduct_like_the_existing_ray() {
        let workload = Workload::parse(
            r#"{"input":"Draft a short cold outreach email body about queues","stop":["@@@"],"benchmark":{"minOutputChars":10,"mustNotContain":["touching base"],"noPromptEcho":true,"stopMustNotAppear":true,"requiresCallToAction":true,"noSubjectGreetingSignoff":true}}"#,
        )
        .unwrap();
        let item = &workload.items[0];
        let good = verdict(
            item,
            "Queues keep small boxes honest. Open to a short call next week?",
        );
        assert!(good.failures.is_empty(), "{good:?}");
        assert_eq!(good.score, 100.0);
        let bad = verdict(
            item,
            "Subject: hi\nDraft a short cold outreach email body about queues. Just touching base @@@",
        );
        assert_eq!(
            bad.failures,
            vec![
                "prompt_echo",
                "stop_leak",
                "email_wrapper",
                "missing_cta",
                "forbidden"
            ]
        );
        assert_eq!(bad.score, 0.0);
    }
}
