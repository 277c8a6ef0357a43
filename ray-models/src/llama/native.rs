//! llama.cpp's native endpoints: `/completion`, `/props`, `/slots`, `/tokenize`,
//! `/apply-template` and the Prometheus `/metrics`, as much of each as Ray reads.

use serde::{Deserialize, Serialize};

use crate::openai::LlamaTimings;

/// `POST /completion`.
#[derive(Debug, Serialize)]
pub(crate) struct CompletionRequest<'a> {
    pub(crate) prompt: &'a str,
    pub(crate) n_predict: u32,
    pub(crate) temperature: f64,
    pub(crate) top_p: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop: Option<&'a [String]>,
    pub(crate) cache_prompt: bool,
    pub(crate) id_slot: i64,
    pub(crate) stream: bool,
}

/// The answer of `POST /completion` (and the final event of its stream).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CompletionResponse {
    #[serde(default)]
    pub(crate) content: String,
    /// The last event of a stream.
    #[serde(default)]
    pub(crate) stop: bool,
    /// An error reported inside the stream.
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) id_slot: Option<i64>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) tokens_predicted: Option<u64>,
    #[serde(default)]
    pub(crate) tokens_evaluated: Option<u64>,
    #[serde(default)]
    pub(crate) tokens_cached: Option<u64>,
    #[serde(default)]
    pub(crate) truncated: Option<bool>,
    #[serde(default)]
    pub(crate) stop_type: Option<String>,
    #[serde(default)]
    pub(crate) timings: Option<LlamaTimings>,
}

/// `GET /props`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Props {
    #[serde(default)]
    pub(crate) default_generation_settings: Option<GenerationSettings>,
    #[serde(default)]
    pub(crate) total_slots: Option<u32>,
    #[serde(default)]
    pub(crate) chat_template: Option<String>,
    #[serde(default)]
    pub(crate) model_alias: Option<String>,
    #[serde(default)]
    pub(crate) model_path: Option<String>,
    #[serde(default)]
    pub(crate) endpoint_slots: Option<bool>,
    #[serde(default)]
    pub(crate) endpoint_metrics: Option<bool>,
    /// What the chat template can do (newer `llama-server`s).
    #[serde(default)]
    pub(crate) chat_template_caps: Option<TemplateCaps>,
}

/// `/props` `chat_template_caps`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TemplateCaps {
    #[serde(default)]
    pub(crate) supports_tools: Option<bool>,
    #[serde(default)]
    pub(crate) supports_tool_calls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct GenerationSettings {
    #[serde(default)]
    pub(crate) n_ctx: Option<u32>,
    #[serde(default)]
    pub(crate) model: Option<String>,
}

/// `POST /tokenize` with plain ids.
#[derive(Debug, Serialize)]
pub(crate) struct TokenizeRequest<'a> {
    pub(crate) content: &'a str,
    pub(crate) add_special: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeResponse {
    #[serde(default)]
    pub(crate) tokens: Vec<serde_json::Value>,
}

/// `POST /apply-template`.
#[derive(Debug, Serialize)]
pub(crate) struct ApplyTemplateRequest<'a> {
    pub(crate) messages: Vec<crate::openai::ChatMessage<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApplyTemplateResponse {
    #[serde(default)]
    pub(crate) prompt: String,
}

/// One entry of `GET /slots` (accepted as an array or as `{"slots": [...]}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub(crate) struct Slot {
    #[serde(default, alias = "id_slot")]
    pub(crate) id: Option<i64>,
    #[serde(default)]
    pub(crate) is_processing: bool,
    #[serde(default)]
    pub(crate) n_ctx: Option<u32>,
    #[serde(default, alias = "task_id")]
    pub(crate) id_task: Option<i64>,
}

/// Parses `/slots` in either shape; at most 64 slots are kept.
pub(crate) fn parse_slots(body: &[u8]) -> Option<Vec<Slot>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let list = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut map) => match map.remove("slots")? {
            serde_json::Value::Array(items) => items,
            _ => return None,
        },
        _ => return None,
    };
    Some(
        list.into_iter()
            .take(64)
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
    )
}

/// The few gauges of llama.cpp's Prometheus `/metrics` that tell about its own queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct BackendMetrics {
    pub(crate) requests_processing: Option<f64>,
    pub(crate) requests_deferred: Option<f64>,
    pub(crate) prompt_tokens_total: Option<f64>,
    pub(crate) tokens_predicted_total: Option<f64>,
}

pub(crate) fn parse_metrics(text: &str) -> BackendMetrics {
    let mut metrics = BackendMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        match name.trim() {
            "llamacpp:requests_processing" => metrics.requests_processing = Some(value),
            "llamacpp:requests_deferred" => metrics.requests_deferred = Some(value),
            "llamacpp:prompt_tokens_total" => metrics.prompt_tokens_total = Some(value),
            "llamacpp:tokens_predicted_total" => metrics.tokens_predicted_total = Some(value),
            _ => {}
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!(
            "{}/../tools/llama-fixture/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        text.split("\n--- HTTP").next().unwrap().to_string()
    }

    #[test]
    fn reads_props() {
        let props: Props = serde_json::from_str(&sample("props.txt")).unwrap();
        assert_eq!(props.total_slots, Some(2));
        assert_eq!(props.default_generation_settings.unwrap().n_ctx, Some(2048));
        assert!(props.chat_template.unwrap().contains("im_start"));
        assert_eq!(props.model_alias.as_deref(), Some("ray-tiny"));
        assert_eq!(props.endpoint_slots, Some(true));
    }

    #[test]
    fn reads_slots_in_both_shapes() {
        let slots = parse_slots(sample("slots_busy.txt").as_bytes()).unwrap();
        assert!(slots.iter().any(|s| s.is_processing));
        let wrapped = format!("{{\"slots\":{}}}", sample("slots_idle.txt"));
        let slots = parse_slots(wrapped.as_bytes()).unwrap();
        assert_eq!(slots.len(), 2);
        assert!(slots.iter().all(|s| !s.is_processing));
        assert!(parse_slots(b"\"nope\"").is_none());
    }

    #[test]
    fn reads_completions_and_tokens() {
        let completion: CompletionResponse =
            serde_json::from_str(&sample("completion_native.txt")).unwrap();
        assert_eq!(completion.id_slot, Some(1));
        assert_eq!(completion.tokens_predicted, Some(16));
        assert_eq!(completion.stop_type.as_deref(), Some("limit"));
        assert_eq!(completion.timings.unwrap().cache_n, Some(8));
        let tokens: TokenizeResponse = serde_json::from_str(&sample("tokenize.txt")).unwrap();
        assert_eq!(tokens.tokens.len(), 15);
        let template: ApplyTemplateResponse =
            serde_json::from_str(&sample("apply_template.txt")).unwrap();
        assert!(template.prompt.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn reads_the_queue_gauges() {
        let metrics = parse_metrics(&sample("metrics_busy.txt"));
        assert!(metrics.requests_processing.is_some());
        assert!(metrics.requests_deferred.is_some());
        assert_eq!(parse_metrics("garbage\n# x\n"), BackendMetrics::default());
    }
}
