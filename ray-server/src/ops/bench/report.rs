//! What a run measured, summarised into the report, and the comparison with a baseline's
//! thresholds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workload::{FailureCounts, Item, verdict};

/// One request's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// The workload item it came from.
    pub item: usize,
    /// HTTP status; 0 when no response came back.
    pub status: u16,
    /// The error code (Ray's `error.code`, or `client_timeout` / `connection_failed`).
    pub error: Option<String>,
    /// Time from sending to the whole body, as the client saw it.
    pub client_ms: f64,
    /// Ray's `latencyMs`.
    pub server_ms: Option<f64>,
    /// Ray's `queueTimeMs`.
    pub queue_ms: Option<f64>,
    /// Time to first token, from the backend's timings.
    pub ttft_ms: Option<f64>,
    /// Generated tokens.
    pub completion_tokens: Option<u64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Prompt tokens the backend reused from its cache.
    pub tokens_cached: Option<u64>,
    /// Generation speed of this request.
    pub tokens_per_second: Option<f64>,
    /// Answered from Ray's result cache.
    pub cached: bool,
    /// Shared an identical request's execution.
    pub deduplicated: bool,
    /// The output text.
    pub output: Option<String>,
}

impl Sample {
    /// Whether the request succeeded.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Percentiles of one measure, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// Values counted.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

/// Nearest-rank percentiles of `values`; `None` when there are none.
pub fn distribution(values: &[f64]) -> Option<Distribution> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    Some(Distribution {
        count: sorted.len(),
        p50: round(rank(50.0), 2),
        p95: round(rank(95.0), 2),
        p99: round(rank(99.0), 2),
        max: round(sorted[sorted.len() - 1], 2),
        mean: round(sorted.iter().sum::<f64>() / sorted.len() as f64, 2),
    })
}

/// Output checks over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// Successful responses whose item has checks.
    pub checked: usize,
    /// Of those, how many passed every check.
    pub passed: usize,
    /// passed / checked, in percent.
    pub pass_rate: Option<f64>,
    /// Mean score (100 minus deductions).
    pub score_avg: Option<f64>,
    /// Of the responses that asked for JSON, the share that parsed as an object, in percent.
    pub valid_json_rate: Option<f64>,
    /// Failed checks by name.
    pub failures: FailureCounts,
}

/// The report `bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Requests at once.
    pub concurrency: usize,
    /// From the first request to the last answer.
    pub wall_time_ms: f64,
    /// Completed requests per second (any status).
    pub throughput_rps: f64,
    /// Successful requests per hour.
    pub requests_per_hour: f64,
    /// Responses by HTTP status (`0`: no response).
    pub status: BTreeMap<String, usize>,
    /// Failures by error code.
    pub errors: BTreeMap<String, usize>,
    /// Failed requests, in percent.
    pub error_rate: f64,
    /// Latency as the client saw it (successful requests).
    pub latency_ms: Option<Distribution>,
    /// Ray's own `latencyMs` (not in direct runs).
    pub server_latency_ms: Option<Distribution>,
    /// Ray's `queueTimeMs` (not in direct runs).
    pub queue_delay_ms: Option<Distribution>,
    /// Time to first token from the backend's timings (requests answered by the backend).
    pub ttft_ms: Option<Distribution>,
    /// Generated tokens in total.
    pub completion_tokens: u64,
    /// Mean generation speed per request, from the backend's timings.
    pub completion_tokens_per_second_avg: Option<f64>,
    /// Generated tokens per second of wall time, over all requests.
    pub output_tokens_per_second: f64,
    /// Responses from Ray's result cache, in percent of successes.
    pub response_cache_hit_rate: f64,
    /// Responses that shared an identical request's execution, in percent of successes.
    pub dedupe_rate: f64,
    /// Backend responses that reused cached prompt tokens, in percent.
    pub prompt_cache_hit_rate: Option<f64>,
    /// Mean share of prompt tokens reused, 0 to 1.
    pub prompt_cache_reuse_ratio: Option<f64>,
    /// Output checks.
    pub quality: Quality,
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round(part as f64 * 100.0 / whole as f64, 2)
    }
}

/// Summarises `samples` of a run over `items` that took `wall_ms`.
pub fn summarise(samples: &[Sample], items: &[Item], concurrency: usize, wall_ms: f64) -> Summary {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
    let mut status = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for sample in samples {
        *status.entry(sample.status.to_string()).or_insert(0) += 1;
        if let Some(error) = &sample.error {
            *errors.entry(error.clone()).or_insert(0) += 1;
        }
    }
    let collect = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|s| f(s)).collect()
    };
    // The backend's own measures only mean something for requests it answered.
    let backend: Vec<&&Sample> = ok.iter().filter(|s| !s.cached && !s.deduplicated).collect();
    let ttft: Vec<f64> = backend.iter().filter_map(|s| s.ttft_ms).collect();
    let speeds: Vec<f64> = backend.iter().filter_map(|s| s.tokens_per_second).collect();
    let with_prompt: Vec<&&&Sample> = backend
        .iter()
        .filter(|s| s.prompt_tokens.is_some_and(|p| p > 0))
        .collect();
    let reused = with_prompt
        .iter()
        .filter(|s| s.tokens_cached.unwrap_or(0) > 0)
        .count();
    let reuse_ratios: Vec<f64> = with_prompt
        .iter()
        .map(|s| s.tokens_cached.unwrap_or(0) as f64 / s.prompt_tokens.unwrap_or(1) as f64)
        .collect();
    let completion_tokens: u64 = ok.iter().filter_map(|s| s.completion_tokens).sum();
    let seconds = (wall_ms / 1000.0).max(f64::EPSILON);
    let mut quality = Quality {
        checked: 0,
        passed: 0,
        pass_rate: None,
        score_avg: None,
        valid_json_rate: None,
        failures: FailureCounts::new(),
    };
    let mut scores = Vec::new();
    let (mut json_asked, mut json_valid) = (0usize, 0usize);
    for sample in &ok {
        let (Some(item), Some(output)) = (items.get(sample.item), &sample.output) else {
            continue;
        };
        let result = verdict(item, output);
        if let Some(valid) = result.valid_json {
            json_asked += 1;
            json_valid += usize::from(valid);
        }
        if !item.assertions.any() {
            continue;
        }
        quality.checked += 1;
        quality.passed += usize::from(result.failures.is_empty());
        scores.push(result.score);
        for failure in result.failures {
            *quality.failures.entry(failure).or_insert(0) += 1;
        }
    }
    if quality.checked > 0 {
        quality.pass_rate = Some(percent(quality.passed, quality.checked));
        quality.score_avg = Some(round(scores.iter().sum::<f64>() / scores.len() as f64, 2));
    }
    if json_asked > 0 {
        quality.valid_json_rate = Some(percent(json_valid, json_asked));
    }
    Summary {
        requests: samples.len(),
        concurrency,
        wall_time_ms: round(wall_ms, 1),
        throughput_rps: round(samples.len() as f64 / seconds, 3),
        requests_per_hour: round(ok.len() as f64 / seconds * 3600.0, 1),
        status,
        errors,
        error_rate: percent(samples.len() - ok.len(), samples.len()),
        latency_ms: distribution(&collect(&|s| Some(s.client_ms))),
        server_latency_ms: distribution(&collect(&|s| s.server_ms)),
        queue_delay_ms: distribution(&collect(&|s| s.queue_ms)),
        ttft_ms: distribution(&ttft),
        completion_tokens,
        completion_tokens_per_second_avg: (!speeds.is_empty())
            .then(|| round(speeds.iter().sum::<f64>() / speeds.len() as f64, 2)),
        output_tokens_per_second: round(completion_tokens as f64 / seconds, 2),
        response_cache_hit_rate: percent(ok.iter().filter(|s| s.cached).count(), ok.len()),
        dedupe_rate: percent(ok.iter().filter(|s| s.deduplicated).count(), ok.len()),
        prompt_cache_hit_rate: (!with_prompt.is_empty())
            .then(|| percent(reused, with_prompt.len())),
        prompt_cache_reuse_ratio: (!reuse_ratios.is_empty()).then(|| {
            round(
                reuse_ratios.iter().sum::<f64>() / reuse_ratios.len() as f64,
                3,
            )
        }),
        quality,
    }
}

/// A baseline file: pass/fail thresholds (the existing Ray's format, plus Ray's own names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// Format version (1).
    #[serde(default)]
    pub version: Option<u32>,
    /// A name.
    #[serde(default)]
    pub label: Option<String>,
    /// The machine it is meant for.
    #[serde(default)]
    pub machine_class: Option<String>,
    /// The workload it is meant for, relative to the working directory.
    #[serde(default)]
    pub workload_path: Option<String>,
    /// Concurrency it is meant for.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Requests it is meant for.
    #[serde(default)]
    pub requests: Option<usize>,
    /// Threshold name to value.
    pub assertions: BTreeMap<String, f64>,
    /// Free text.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The assertions a baseline may hold: (name, `<=` or `>=`, the summary measure it checks).
pub const ASSERTIONS: &[(&str, &str, &str)] = &[
    (
        "maxLatencyP95Ms",
        "<=",
        "latency p95 (Ray's latencyMs; the client's in direct runs)",
    ),
    ("maxLatencyP99Ms", "<=", "latency p99 (as above)"),
    (
        "maxClientLatencyP95Ms",
        "<=",
        "latencyMs.p95 as the client saw it",
    ),
    ("maxQueueDelayP95Ms", "<=", "queueDelayMs.p95"),
    ("maxTtftP95Ms", "<=", "ttftMs.p95"),
    (
        "minCompletionTokensPerSecondAvg",
        ">=",
        "completionTokensPerSecondAvg",
    ),
    ("minOutputTokensPerSecond", ">=", "outputTokensPerSecond"),
    ("minThroughputRps", ">=", "throughputRps"),
    ("minRequestsPerHour", ">=", "requestsPerHour"),
    (
        "minEmailsPerHour",
        ">=",
        "requestsPerHour (the existing Ray's name)",
    ),
    ("maxErrorRate", "<=", "errorRate (percent)"),
    (
        "minPromptCacheHitRate",
        ">=",
        "promptCacheHitRate (percent)",
    ),
    ("minPromptCacheReuseRatio", ">=", "promptCacheReuseRatio"),
    (
        "minResponseCacheHitRate",
        ">=",
        "responseCacheHitRate (percent)",
    ),
    ("minQualityPassRate", ">=", "quality.passRate (percent)"),
    ("minQualityScoreAvg", ">=", "quality.scoreAvg"),
    ("minValidJsonRate", ">=", "quality.validJsonRate (percent)"),
    ("maxGatewayRssMiB", "<=", "gateway.rssMiBMax"),
];

impl Baseline {
    /// Reads a baseline and checks that every assertion is known.
    pub fn read(path: &Path) -> Result<Baseline, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let baseline: Baseline = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a baseline: {e}", path.display()))?;
        let unknown: Vec<&String> = baseline
            .assertions
            .keys()
            .filter(|k| !ASSERTIONS.iter().any(|(name, _, _)| name == k))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "{}: unknown assertion(s) {unknown:?}; known: {}",
                path.display(),
                ASSERTIONS
                    .iter()
                    .map(|(name, _, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(baseline)
    }
}

/// One threshold checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// The assertion's name.
    pub metric: String,
    /// `<=` or `>=`.
    pub operator: &'static str,
    /// The threshold.
    pub expected: f64,
    /// What was measured; `null` when this run did not measure it (which fails the check).
    pub actual: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// The report's comparison block.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The baseline file.
    pub baseline_path: String,
    /// Its label.
    pub baseline_label: Option<String>,
    /// Its machine class.
    pub machine_class: Option<String>,
    /// Whether every check held.
    pub passed: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

/// Compares a summary (and the gateway's peak RSS) with a baseline.
pub fn compare(
    baseline: &Baseline,
    path: &Path,
    summary: &Summary,
    direct: bool,
    rss_max: Option<f64>,
) -> Comparison {
    let p = |d: Option<Distribution>, f: fn(&Distribution) -> f64| d.as_ref().map(f);
    let latency = if direct {
        summary.latency_ms
    } else {
        summary.server_latency_ms
    };
    let checks: Vec<Check> = baseline
        .assertions
        .iter()
        .map(|(name, expected)| {
            let actual = match name.as_str() {
                "maxLatencyP95Ms" => p(latency, |d| d.p95),
                "maxLatencyP99Ms" => p(latency, |d| d.p99),
                "maxClientLatencyP95Ms" => p(summary.latency_ms, |d| d.p95),
                "maxQueueDelayP95Ms" => p(summary.queue_delay_ms, |d| d.p95),
                "maxTtftP95Ms" => p(summary.ttft_ms, |d| d.p95),
                "minCompletionTokensPerSecondAvg" => summary.completion_tokens_per_second_avg,
                "minOutputTokensPerSecond" => Some(summary.output_tokens_per_second),
                "minThroughputRps" => Some(summary.throughput_rps),
                "minRequestsPerHour" | "minEmailsPerHour" => Some(summary.requests_per_hour),
                "maxErrorRate" => Some(summary.error_rate),
                "minPromptCacheHitRate" => summary.prompt_cache_hit_rate,
                "minPromptCacheReuseRatio" => summary.prompt_cache_reuse_ratio,
                "minResponseCacheHitRate" => Some(summary.response_cache_hit_rate),
                "minQualityPassRate" => summary.quality.pass_rate,
                "minQualityScoreAvg" => summary.quality.score_avg,
                "minValidJsonRate" => summary.quality.valid_json_rate,
                "maxGatewayRssMiB" => rss_max,
                _ => None,
            };
            let operator = if name.starts_with("max") { "<=" } else { ">=" };
            let passed = actual.is_some_and(|a| {
                if operator == "<=" {
                    a <= *expected
                } else {
                    a >= *expected
                }
            });
            Check {
                metric: name.clone(),
                operator,
                expected: *expected,
                actual,
                passed,
            }
        })
        .collect();
    Comparison {
        baseline_path: path.display().to_string(),
        baseline_label: baseline.label.clone(),
        machine_class: baseline.machine_class.clone(),
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

/// The JSON value of a serialisable part of the report.
pub fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = distribution(&values).unwrap();
        assert_eq!(
            (d.p50, d.p95, d.p99, d.max, d.mean),
            (50.0, 95.0, 99.0, 100.0, 50.5)
        );
        let one = distribution(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(distribution(&[]).is_none());
    }

    #[test]
    fn summaries_count_caches_and_errors() {
        let items = super::super::workload::Workload::parse(r#"{"input":"x"}"#)
            .unwrap()
            .items;
        let sample = |status: u16, cached: bool, cached_tokens: u64| Sample {
            status,
            error: (status != 200).then(|| "queue_full".to_string()),
            client_ms: 10.0,
            server_ms: Some(8.0),
            queue_ms: Some(1.0),
            ttft_ms: Some(3.0),
            completion_tokens: Some(10),
            prompt_tokens: Some(20),
            tokens_cached: Some(cached_tokens),
            tokens_per_second: Some(100.0),
            cached,
            output: Some("out".into()),
            ..Sample::default()
        };
        let samples = vec![
            sample(200, false, 0),
            sample(200, false, 10),
            sample(200, true, 0),
            sample(503, false, 0),
        ];
        let summary = summarise(&samples, &items, 2, 1000.0);
        assert_eq!(summary.status["200"], 3);
        assert_eq!(summary.errors["queue_full"], 1);
        assert_eq!(summary.error_rate, 25.0);
        assert_eq!(summary.response_cache_hit_rate, 33.33);
        // The cache hit is not a backend answer: 1 of 2 backend answers reused its prompt.
        assert_eq!(summary.prompt_cache_hit_rate, Some(50.0));
        assert_eq!(summary.prompt_cache_reuse_ratio, Some(0.25));
        assert_eq!(summary.completion_tokens, 30);
        assert_eq!(summary.requests_per_hour, 10800.0);
        let baseline: Baseline = serde_json::from_str(
            r#"{"assertions":{"maxErrorRate":30,"maxQueueDelayP95Ms":0.5,"maxGatewayRssMiB":64}}"#,
        )
        .unwrap();
        let comparison = compare(&baseline, Path::new("b.json"), &summary, false, None);
        assert!(!comparison.passed);
        let by_name: BTreeMap<&str, &Check> = comparison
            .checks
            .iter()
            .map(|c| (c.metric.as_str(), c))
            .collect();
        assert!(by_name["maxErrorRate"].passed);
        assert!(!by_name["maxQueueDelayP95Ms"].passed);
        assert_eq!(by_name["maxGatewayRssMiB"].actual, None);
        assert!(!by_name["maxGatewayRssMiB"].passed);
    }
}
