//! `ray-server bench`: replays a workload against a running gateway (`POST /v1/infer`) or,
//! with `--direct`, against the backend itself (`POST /v1/chat/completions`, the same prompts
//! rendered from Ray's templates), at a fixed concurrency, and prints one JSON report:
//! throughput, latency percentiles, time to first token, tokens per second, status and error
//! counts, cache and dedupe rates, output checks, and the gateway's RSS. `--baseline` compares
//! the report with a file of thresholds and exits 1 when one does not hold.
//!
//! The client runs on one thread so that on a two-core box it takes as little from the
//! gateway and the backend as it can; requests are not streamed, so time to first token comes
//! from the backend's own timings.

pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ray_core::config::ConfigLoader;
use serde_json::Value;

use report::{Baseline, Sample, compare, summarise, to_value};
use workload::{Item, Workload, chat_request};

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The workload: JSONL (one /v1/infer request per line, optional `benchmark` checks) or a
    /// JSON array [default: the baseline's workloadPath].
    #[arg(long, value_name = "FILE")]
    pub workload: Option<PathBuf>,
    /// Where the gateway (or, with --direct, the backend) listens [default: from --config,
    /// else http://127.0.0.1:3000].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Send the workload to the backend's OpenAI-compatible chat endpoint instead of Ray, to
    /// measure what Ray adds. Templates are rendered as Ray renders them.
    #[arg(long)]
    pub direct: bool,
    /// The model name sent in --direct runs [default: --config's modelRef, else "default"].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// A Ray config to take defaults from: the gateway's address, the backend's address and
    /// model (with --direct), the API key variable, maxOutputTokens.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The API key [default: RAY_BENCH_API_KEY, else the first key in the variable the
    /// config's auth.apiKeyEnv names].
    #[arg(
        long,
        env = "RAY_BENCH_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Requests in flight at once [default: the baseline's, else 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: Option<u64>,
    /// Requests in total, cycling through the workload [default: the baseline's, else the
    /// workload's length].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub requests: Option<u64>,
    /// A name for this run in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Thresholds to compare with; exit 1 when one does not hold.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Send every request to Ray with `"cache": false`: no result cache and no joining of
    /// identical requests, so each one reaches the backend (to compare with --direct, or to
    /// measure the backend's capacity through Ray).
    #[arg(long, conflicts_with = "direct")]
    pub no_cache: bool,
    /// Give up on one request after this long.
    #[arg(long, default_value_t = 120_000, value_name = "MS")]
    pub timeout_ms: u64,
}

struct Target {
    direct: bool,
    no_cache: bool,
    base_url: String,
    model: String,
    api_key: Option<String>,
    default_max_tokens: u32,
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ray-server bench: {message}");
    ExitCode::from(2)
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> ExitCode {
    let baseline = match &args.baseline {
        Some(path) => match Baseline::read(path) {
            Ok(baseline) => Some(baseline),
            Err(error) => return usage(error),
        },
        None => None,
    };
    let workload_path = args.workload.clone().or_else(|| {
        baseline
            .as_ref()
            .and_then(|b| b.workload_path.as_ref().map(PathBuf::from))
    });
    let Some(workload_path) = workload_path else {
        return usage("--workload FILE is required (or a --baseline with a workloadPath)");
    };
    let workload = match Workload::read(&workload_path) {
        Ok(workload) => workload,
        Err(error) => return usage(error),
    };
    let config = match &args.config {
        Some(path) => match ConfigLoader::new()
            .with_file(path)
            .with_process_env()
            .load()
        {
            Ok(loaded) => Some(loaded.config),
            Err(error) => {
                crate::ops::fs::report_error(&path.display().to_string(), &error);
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let direct = args.direct;
    let base_url = args
        .base_url
        .clone()
        .or_else(|| {
            let config = config.as_ref()?;
            if direct {
                config.model.adapter.http().map(|h| h.base_url.to_string())
            } else {
                let host = match config.server.host.as_str() {
                    "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
                    host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
                    host => host.to_string(),
                };
                Some(format!("http://{host}:{}", config.server.port))
            }
        })
        .unwrap_or_else(|| "http://127.0.0.1:3000".into())
        .trim_end_matches('/')
        .to_string();
    if !base_url.starts_with("http://") {
        return usage(format!(
            "--base-url must be an http:// URL (bench measures on the box, not through TLS), got {base_url:?}"
        ));
    }
    let api_key = args.api_key.clone().or_else(|| {
        let config = config.as_ref()?;
        let name = if direct {
            config.model.adapter.http()?.api_key_env?.to_string()
        } else if config.auth.enabled {
            config.auth.api_key_env.clone()
        } else {
            return None;
        };
        std::env::var(name)
            .ok()?
            .split([',', '\n'])
            .map(str::trim)
            .find(|k| !k.is_empty())
            .map(String::from)
    });
    let target = Target {
        direct,
        no_cache: args.no_cache,
        base_url,
        model: args
            .model
            .clone()
            .or_else(|| {
                config
                    .as_ref()
                    .and_then(|c| c.model.adapter.http().map(|h| h.model_ref.to_string()))
            })
            .unwrap_or_else(|| "default".into()),
        api_key,
        default_max_tokens: config.as_ref().map_or(256, |c| c.model.max_output_tokens),
    };
    let concurrency = args
        .concurrency
        .map(|c| c as usize)
        .or(baseline.as_ref().and_then(|b| b.concurrency))
        .unwrap_or(1)
        .max(1);
    let requests = args
        .requests
        .map(|r| r as usize)
        .or(baseline.as_ref().and_then(|b| b.requests))
        .unwrap_or(workload.items.len())
        .max(1);
    if direct {
        for (index, item) in workload.items.iter().enumerate() {
            if let Err(error) = chat_request(item, &target.model, target.default_max_tokens) {
                return usage(format!("item {}: {error}", index + 1));
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ray-server bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let load_before = load_average();
    let result = runtime.block_on(measure(&target, &workload, concurrency, requests, timeout));
    let load_after = load_average();
    let (samples, wall, rss) = match result {
        Ok(result) => result,
        Err(error) => {
            eprintln!("ray-server bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let summary = summarise(
        &samples,
        &workload.items,
        concurrency,
        wall.as_secs_f64() * 1000.0,
    );
    let rss_max = rss.iter().copied().fold(None, |max: Option<f64>, v| {
        Some(max.map_or(v, |m| m.max(v)))
    });
    let comparison = match (&baseline, &args.baseline) {
        (Some(baseline), Some(path)) => Some(compare(baseline, path, &summary, direct, rss_max)),
        _ => None,
    };
    let mut document = serde_json::json!({
        "kind": "ray-benchmark",
        "version": 1,
        "label": args.label,
        "generatedAt": ray_core::time::now_rfc3339(),
        "target": {
            "mode": if direct { "direct" } else { "ray" },
            "resultCache": !direct && !args.no_cache,
            "baseUrl": target.base_url,
            "model": direct.then_some(target.model.as_str()),
        },
        "workload": {
            "path": workload_path.display().to_string(),
            "items": workload.items.len(),
        },
        // The machine the client ran on (the gateway's too when it measures on the box):
        // a loaded machine explains slow runs.
        "host": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "loadAverageBefore": load_before,
            "loadAverageAfter": load_after,
        },
        "summary": to_value(&summary),
        "gateway": if direct {
            Value::Null
        } else {
            serde_json::json!({
                "rssMiBBefore": rss.first(),
                "rssMiBAfter": rss.last(),
                "rssMiBMax": rss_max,
                "rssSamples": rss.len(),
            })
        },
    });
    if let Some(comparison) = &comparison {
        document["comparison"] = to_value(comparison);
    }
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    println!("{text}");
    if let Some(path) = &args.output
        && let Err(error) =
            crate::ops::fs::write_atomically(path, format!("{text}\n").as_bytes(), 0o644)
    {
        eprintln!("ray-server bench: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if samples.iter().all(|s| !s.ok()) {
        eprintln!("ray-server bench: no request succeeded (see summary.errors)");
        return ExitCode::FAILURE;
    }
    match comparison {
        Some(comparison) if !comparison.passed => {
            for check in comparison.checks.iter().filter(|c| !c.passed) {
                eprintln!(
                    "regression: {} is {} (must be {} {})",
                    check.metric,
                    check
                        .actual
                        .map_or_else(|| "not measured".to_string(), |a| a.to_string()),
                    check.operator,
                    check.expected
                );
            }
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
fn load_average() -> Option<Vec<f64>> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .take(3)
        .map(|v| v.parse().ok())
        .collect()
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The gateway's RSS from `/health`.
async fn gateway_rss(client: &reqwest::Client, target: &Target) -> Option<f64> {
    let mut request = client.get(format!("{}/health", target.base_url));
    if let Some(key) = &target.api_key {
        request = request.bearer_auth(key);
    }
    let health: Value = request.send().await.ok()?.json().await.ok()?;
    health["runtime"]["memory"]["processRssMiB"].as_f64()
}

type Measured = (Vec<Sample>, Duration, Vec<f64>);

async fn measure(
    target: &Target,
    workload: &Workload,
    concurrency: usize,
    requests: usize,
    timeout: Duration,
) -> Result<Measured, String> {
    let client = client(timeout)?;
    let probe = if target.direct { "/health" } else { "/livez" };
    client
        .get(format!("{}{probe}", target.base_url))
        .send()
        .await
        .map_err(|e| format!("cannot reach {}{probe}: {e}", target.base_url))?;
    let mut rss = Vec::new();
    if !target.direct {
        rss.extend(gateway_rss(&client, target).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    // The run's progress on stderr (the report goes to stdout), drawn like provision's.
    let progress = Arc::new(parking_lot::Mutex::new(
        crate::ops::progress::Progress::new(
            "bench requests",
            Some(requests as u64),
            0,
            crate::ops::progress::Unit::Items,
        ),
    ));
    let started = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let workers = (0..concurrency).map(|_| {
        let next = next.clone();
        let client = client.clone();
        let progress = progress.clone();
        async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests {
                    return samples;
                }
                let item_index = index % workload.items.len();
                let item = &workload.items[item_index];
                samples.push(send(&client, target, item, item_index).await);
                progress.lock().advance(1);
            }
        }
    });
    // Sample the gateway's RSS once a second while the run lasts.
    let sampler = async {
        let mut samples = Vec::new();
        if target.direct {
            return samples;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    samples.extend(gateway_rss(&client, target).await);
                }
                _ = done_rx.changed() => return samples,
            }
        }
    };
    let run = async {
        let results = futures_util::future::join_all(workers).await;
        let _ = done_tx.send(true);
        results
    };
    let (results, during) = tokio::join!(run, sampler);
    let wall = started.elapsed();
    if let Ok(progress) = Arc::try_unwrap(progress) {
        progress.into_inner().finish();
    }
    rss.extend(during);
    if !target.direct {
        rss.extend(gateway_rss(&client, target).await);
    }
    let mut samples: Vec<Sample> = results.into_iter().flatten().collect();
    samples.sort_by_key(|s| s.item);
    Ok((samples, wall, rss))
}

async fn send(client: &reqwest::Client, target: &Target, item: &Item, index: usize) -> Sample {
    let (url, body) = if target.direct {
        let body =
            chat_request(item, &target.model, target.default_max_tokens).unwrap_or(Value::Null);
        (format!("{}/v1/chat/completions", target.base_url), body)
    } else {
        let mut body = item.request.clone();
        if target.no_cache {
            body["cache"] = Value::Bool(false);
        }
        (format!("{}/v1/infer", target.base_url), body)
    };
    let mut request = client.post(url).json(&body);
    if let Some(key) = &target.api_key {
        request = request.bearer_auth(key);
    }
    let started = Instant::now();
    let mut sample = Sample {
        item: index,
        ..Sample::default()
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            sample.client_ms = started.elapsed().as_secs_f64() * 1000.0;
            sample.error = Some(if error.is_timeout() {
                "client_timeout".into()
            } else {
                "connection_failed".into()
            });
            return sample;
        }
    };
    sample.status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(error) => {
            sample.client_ms = started.elapsed().as_secs_f64() * 1000.0;
            sample.error = Some(if error.is_timeout() {
                "client_timeout".into()
            } else {
                "invalid_response".into()
            });
            if sample.ok() {
                sample.status = 0;
            }
            return sample;
        }
    };
    sample.client_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !sample.ok() {
        sample.error = Some(
            body["error"]["code"]
                .as_str()
                .map(String::from)
                .or_else(|| body["error"]["type"].as_str().map(String::from))
                .unwrap_or_else(|| format!("http_{}", sample.status)),
        );
        return sample;
    }
    if target.direct {
        read_chat(&body, &mut sample);
    } else {
        read_infer(&body, &mut sample);
    }
    sample
}

fn read_infer(body: &Value, sample: &mut Sample) {
    sample.output = body["output"].as_str().map(String::from);
    sample.server_ms = body["latencyMs"].as_f64();
    sample.queue_ms = body["queueTimeMs"].as_f64();
    sample.cached = body["cached"].as_bool().unwrap_or(false);
    sample.deduplicated = body["deduplicated"].as_bool().unwrap_or(false);
    sample.completion_tokens = body["usage"]["tokens"]["completion"].as_u64();
    sample.prompt_tokens = body["usage"]["tokens"]["prompt"].as_u64();
    let provider = &body["diagnostics"]["provider"];
    sample.tokens_cached = provider["tokensCached"].as_u64();
    sample.ttft_ms = provider["timings"]["ttftMs"].as_f64();
    sample.tokens_per_second = provider["timings"]["completionTokensPerSecond"].as_f64();
}

fn read_chat(body: &Value, sample: &mut Sample) {
    sample.output = body["choices"][0]["message"]["content"]
        .as_str()
        .map(String::from);
    sample.completion_tokens = body["usage"]["completion_tokens"].as_u64();
    sample.prompt_tokens = body["usage"]["prompt_tokens"].as_u64();
    let timings = &body["timings"];
    sample.tokens_cached = timings["cache_n"]
        .as_u64()
        .or_else(|| body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64());
    // As Ray computes it: prompt processing plus one generated token.
    sample.ttft_ms = timings["prompt_ms"]
        .as_f64()
        .map(|p| p + timings["predicted_per_token_ms"].as_f64().unwrap_or(0.0));
    sample.tokens_per_second = timings["predicted_per_second"].as_f64();
}
