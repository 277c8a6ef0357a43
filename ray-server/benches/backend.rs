//! What Ray adds in front of a real `llama-server`: the same requests sent to a backend
//! directly (`POST /v1/chat/completions`, not streamed) and through a release `ray-server`
//! (`POST /v1/infer` with the llama.cpp adapter, result cache off) to an identical second
//! backend, one client, alternating direct and Ray request by request so the machine's noise
//! falls on both alike.
//!
//! Reported per scenario: p50 and p99 latency of each path, Ray's added latency at p50 and
//! p99, and the added time's share of Ray's end-to-end time. Scenarios:
//! - `new-prompts`: every prompt is new to Ray, so it renders the template and counts the
//!   tokens through the backend (`/apply-template`, `/tokenize`) before admitting it;
//! - `known-prompts`: the prompts were seen before (result cache off), so Ray's prepared
//!   prompt is reused and the only backend call is the generation.
//!
//! Also reported: each path's time outside the backend's own compute (HTTP, Ray's work, the
//! preparation calls) and inside it (from the backend's timings), Ray's CPU per request, and
//! the prompt tokens the backend reused from its cache.
//!
//! Needs the fixture (`tools/llama-fixture/setup.sh`). Run with
//! `cargo bench -p ray-server --bench backend`. Options: `RAY_BENCH_MODEL` (`large`, the
//! default, or `xl`), `RAY_BENCH_PAIRS` (requests per path and scenario, default 120),
//! `RAY_BENCH_MAX_TOKENS` (default 32), `RAY_BENCH_JSON` (write the report there).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fixture::{Llama, free_port};

const SYSTEM: &str = "You are a concise assistant for a small engineering team.";
const SUBJECTS: [&str; 12] = [
    "staged rollouts",
    "incident triage",
    "queue back-pressure",
    "prompt caching",
    "rate limiting",
    "health checks",
    "graceful shutdown",
    "memory pressure",
    "token budgets",
    "slot affinity",
    "request deadlines",
    "JSON logs",
];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("backend bench: run it with `cargo bench -p ray-server --bench backend`");
        return;
    }
    let model = std::env::var("RAY_BENCH_MODEL").unwrap_or_else(|_| "large".into());
    let missing = [fixture::binary(), fixture::model(&model)]
        .into_iter()
        .filter(|p| !p.exists())
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        println!(
            "backend bench SKIPPED: the llama.cpp fixture is not built (missing {missing:?}); \
             run tools/llama-fixture/setup.sh"
        );
        return;
    }
    let pairs = env_number("RAY_BENCH_PAIRS", 120);
    let max_tokens = env_number("RAY_BENCH_MAX_TOKENS", 32);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(&model, pairs, max_tokens));
    println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    if let Ok(path) = std::env::var("RAY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report")).expect("write");
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Ray(Child);

impl Drop for Ray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prompt(i: usize) -> String {
    format!(
        "Write two sentences for note {i} on {} for an on-call engineer.",
        SUBJECTS[i % SUBJECTS.len()]
    )
}

async fn run(model: &str, pairs: usize, max_tokens: usize) -> serde_json::Value {
    // Two identical backends, one per path: sharing one would let each path find the other's
    // prompts in the slots' caches and blur the comparison.
    let llama = Llama::start(model);
    let direct_llama = Llama::start(model);
    let config_dir = std::env::temp_dir().join(format!("ray-backend-bench-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir).unwrap();
    let config_path = config_dir.join("ray.json");
    let config = fixture::ray_config(
        llama.port,
        r#","cache":{"enabled":false},"telemetry":{"logLevel":"warn"}"#,
    )
    .replace(r#""concurrency":2"#, r#""concurrency":2,"batchWindowMs":0"#);
    std::fs::write(&config_path, config).unwrap();
    let ray_port = free_port();
    let ray = Ray(Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config_path)
        .env("RAY_PORT", ray_port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(config_dir.join("ray.log")).unwrap())
        .spawn()
        .expect("spawn ray-server"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .unwrap();
    let ray_url = format!("http://127.0.0.1:{ray_port}");
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{ray_url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ray-server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let direct_url = direct_llama.url("/v1/chat/completions");
    let send_direct = |input: String| {
        let client = client.clone();
        let url = direct_url.clone();
        async move {
            let body = serde_json::json!({
                "model": "ray-bench",
                "messages": [
                    { "role": "system", "content": SYSTEM },
                    { "role": "user", "content": input },
                ],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "seed": 7,
                "stream": false,
            });
            let started = Instant::now();
            let response = client.post(&url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let value: serde_json::Value = response.json().await.unwrap();
            let tokens = value["usage"]["completion_tokens"].as_u64().unwrap();
            let timings = &value["timings"];
            let backend =
                timings["prompt_ms"].as_f64().unwrap() + timings["predicted_ms"].as_f64().unwrap();
            Sample {
                total: started.elapsed(),
                backend_ms: backend,
                tokens,
                cached: timings["cache_n"].as_u64().unwrap_or(0),
            }
        }
    };
    let send_ray = |input: String| {
        let client = client.clone();
        let url = format!("{ray_url}/v1/infer");
        async move {
            let body = serde_json::json!({
                "system": SYSTEM,
                "input": input,
                "maxTokens": max_tokens,
                "temperature": 0.0,
                "seed": 7,
                "cache": false,
            });
            let started = Instant::now();
            let response = client.post(&url).json(&body).send().await.unwrap();
            let status = response.status();
            let value: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{value}");
            let tokens = value["usage"]["tokens"]["completion"].as_u64().unwrap();
            let provider = &value["diagnostics"]["provider"];
            let backend = provider["timings"]["totalMs"].as_f64().unwrap();
            Sample {
                total: started.elapsed(),
                backend_ms: backend,
                tokens,
                cached: provider["tokensCached"].as_u64().unwrap_or(0),
            }
        }
    };
    // Warm both paths (connections, the backend's first decode).
    for i in 0..4 {
        send_direct(prompt(10_000 + i)).await;
        send_ray(prompt(10_000 + i)).await;
    }
    let mut scenarios = Vec::new();
    for (name, first) in [("new-prompts", 0), ("known-prompts", 0)] {
        let mut direct = Vec::with_capacity(pairs);
        let mut through_ray = Vec::with_capacity(pairs);
        let mut token_mismatch = 0;
        let cpu_before = cpu_ms(ray.0.id());
        for i in 0..pairs {
            let input = prompt(first + i);
            // Alternate which path goes first, so neither always meets a warmer backend.
            let (d, r) = if i % 2 == 0 {
                let d = send_direct(input.clone()).await;
                (d, send_ray(input).await)
            } else {
                let r = send_ray(input.clone()).await;
                (send_direct(input).await, r)
            };
            if d.tokens != r.tokens {
                token_mismatch += 1;
            }
            direct.push(d);
            through_ray.push(r);
        }
        let cpu = cpu_ms(ray.0.id()) - cpu_before;
        let mut summary = summary(name, &direct, &through_ray, token_mismatch);
        summary["rayCpuMsPerRequest"] = (cpu / pairs as f64).into();
        scenarios.push(summary);
    }
    let streamed = streamed(&client, &direct_llama, &ray_url, pairs, max_tokens).await;
    serde_json::json!({
        "model": format!("ray-{model} (fixture, random weights)"),
        "maxTokens": max_tokens,
        "pairs": pairs,
        "scenarios": scenarios,
        "streamed": streamed,
    })
}

/// One streamed request: when its first token and each next one arrived.
struct Streamed {
    first: Duration,
    gaps: Vec<Duration>,
    tokens: usize,
}

/// Sends `body` to `url` and times the text-bearing events of the answer. `text` says whether
/// an event carries generated text.
async fn time_stream(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    text: fn(&ray_core::sse::SseEvent) -> bool,
) -> Streamed {
    use futures_util::StreamExt;
    let started = Instant::now();
    // llama-server closes the connection after a streamed answer while saying keep-alive, so
    // both paths get a fresh connection each time (the same cost on both sides).
    let response = client
        .post(url)
        .header("connection", "close")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut bytes = response.bytes_stream();
    let mut decoder = ray_core::sse::SseDecoder::new(16 << 20);
    let mut arrivals = Vec::new();
    while let Some(chunk) = bytes.next().await {
        decoder.feed(&chunk.unwrap()).unwrap();
        while let Some(event) = decoder.next_event().unwrap() {
            if text(&event) {
                arrivals.push(started.elapsed());
            }
        }
    }
    let first = arrivals[0];
    let gaps = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    Streamed {
        first,
        gaps,
        tokens: arrivals.len(),
    }
}

/// Time to first token and the gaps between tokens, streamed directly and through Ray.
async fn streamed(
    client: &reqwest::Client,
    direct_llama: &Llama,
    ray_url: &str,
    pairs: usize,
    max_tokens: usize,
) -> serde_json::Value {
    let direct_url = direct_llama.url("/v1/chat/completions");
    let ray_infer = format!("{ray_url}/v1/infer");
    let direct_text: fn(&ray_core::sse::SseEvent) -> bool = |event| {
        serde_json::from_str::<serde_json::Value>(&event.data).is_ok_and(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
    };
    let ray_text: fn(&ray_core::sse::SseEvent) -> bool =
        |event| event.event.as_deref() == Some("delta");
    let mut direct = Vec::with_capacity(pairs);
    let mut through_ray = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let input = prompt(20_000 + i);
        let direct_body = serde_json::json!({
            "model": "ray-bench",
            "messages": [
                { "role": "system", "content": SYSTEM },
                { "role": "user", "content": input },
            ],
            "max_tokens": max_tokens, "temperature": 0.0, "seed": 7, "stream": true,
        });
        let ray_body = serde_json::json!({
            "system": SYSTEM, "input": input, "maxTokens": max_tokens,
            "temperature": 0.0, "seed": 7, "cache": false, "stream": true,
        });
        if i % 2 == 0 {
            direct.push(time_stream(client, &direct_url, direct_body, direct_text).await);
            through_ray.push(time_stream(client, &ray_infer, ray_body, ray_text).await);
        } else {
            through_ray.push(time_stream(client, &ray_infer, ray_body, ray_text).await);
            direct.push(time_stream(client, &direct_url, direct_body, direct_text).await);
        }
    }
    let first = |runs: &[Streamed]| sorted(runs.iter().map(|r| ms(r.first)));
    let gaps = |runs: &[Streamed]| sorted(runs.iter().flat_map(|r| r.gaps.iter().map(|g| ms(*g))));
    let tokens = |runs: &[Streamed]| runs.iter().map(|r| r.tokens).sum::<usize>();
    let (d_first, r_first) = (first(&direct), first(&through_ray));
    let (d_gaps, r_gaps) = (gaps(&direct), gaps(&through_ray));
    serde_json::json!({
        "scenario": "streamed (new prompts)",
        "timeToFirstTokenP50Ms": { "direct": percentile(&d_first, 0.5), "ray": percentile(&r_first, 0.5) },
        "timeToFirstTokenP99Ms": { "direct": percentile(&d_first, 0.99), "ray": percentile(&r_first, 0.99) },
        "addedTimeToFirstTokenP50Ms": percentile(&r_first, 0.5) - percentile(&d_first, 0.5),
        "interTokenP50Ms": { "direct": percentile(&d_gaps, 0.5), "ray": percentile(&r_gaps, 0.5) },
        "interTokenP99Ms": { "direct": percentile(&d_gaps, 0.99), "ray": percentile(&r_gaps, 0.99) },
        "textEvents": { "direct": tokens(&direct), "ray": tokens(&through_ray) },
    })
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 1000.0 / 100.0
}

/// One request: its end-to-end time and the backend's own compute time for it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    total: Duration,
    backend_ms: f64,
    tokens: u64,
    /// Prompt tokens the backend took from its cache.
    cached: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

fn summary(
    name: &str,
    direct: &[Sample],
    through_ray: &[Sample],
    token_mismatch: usize,
) -> serde_json::Value {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let d = sorted(direct.iter().map(|s| ms(s.total)));
    let r = sorted(through_ray.iter().map(|s| ms(s.total)));
    // Outside the backend's compute: HTTP, Ray's work, preparation calls, connection set-up.
    let d_outside = sorted(direct.iter().map(|s| ms(s.total) - s.backend_ms));
    let r_outside = sorted(through_ray.iter().map(|s| ms(s.total) - s.backend_ms));
    let d_backend = sorted(direct.iter().map(|s| s.backend_ms));
    let r_backend = sorted(through_ray.iter().map(|s| s.backend_ms));
    serde_json::json!({
        "scenario": name,
        "directP50Ms": percentile(&d, 0.5),
        "directP99Ms": percentile(&d, 0.99),
        "rayP50Ms": percentile(&r, 0.5),
        "rayP99Ms": percentile(&r, 0.99),
        "addedP50Ms": percentile(&r, 0.5) - percentile(&d, 0.5),
        "addedP99Ms": percentile(&r, 0.99) - percentile(&d, 0.99),
        "addedShareOfEndToEnd": (mean(&r) - mean(&d)) / mean(&r),
        "outsideBackendP50Ms": { "direct": percentile(&d_outside, 0.5), "ray": percentile(&r_outside, 0.5) },
        "outsideBackendP99Ms": { "direct": percentile(&d_outside, 0.99), "ray": percentile(&r_outside, 0.99) },
        "backendComputeP50Ms": { "direct": percentile(&d_backend, 0.5), "ray": percentile(&r_backend, 0.5) },
        "backendPromptTokensFromCacheMean": {
            "direct": mean(&direct.iter().map(|s| s.cached as f64).collect::<Vec<_>>()),
            "ray": mean(&through_ray.iter().map(|s| s.cached as f64).collect::<Vec<_>>()),
        },
        "pairsWithDifferentTokenCounts": token_mismatch,
    })
}
