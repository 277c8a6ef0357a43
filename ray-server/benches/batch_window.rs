//! Whether `scheduler.batchWindowMs` pays off in front of a real `llama-server`: the same
//! requests, in one run, through a release `ray-server` (llama.cpp adapter, result cache off)
//! with the window off (0), at the profiles' former default and at a larger value, at 1, 2 and
//! 8 concurrent clients. (The profiles now leave it off; `docs/performance.md` has the figures
//! that decided it.)
//!
//! Each client is one conversation-like stream: its own long system prompt (about 300 tokens,
//! different from the first token on, so no two clients share a prefix) and a numbered
//! question, one request at a time (closed loop). That is the traffic the window is for: when a
//! client's request finishes, its permit's slot holds the client's prefix, and the window
//! holds that permit a few milliseconds for the client's next request instead of giving it to
//! another client, whose prefix the slot does not hold.
//!
//! `llama-server` runs as the profiles launch it (`--cache-ram 512 --cache-reuse 256`), with
//! as many slots as Ray has permits. Two settings are measured: two permits (the `sub1b` and
//! `1b-8gb` profiles, whose window was 10 ms) and one permit (`sub1b-cax11` and `1b`, 5 ms). Every cell starts a fresh `ray-server`, warms each client's prefix once (one request
//! per client, one at a time), then times the cell. Rounds repeat every cell, in the opposite
//! window order each round, so the machine's drift falls on all windows alike.
//!
//! Reported per (permits, clients, window, round): requests and tokens per second, latency p50
//! and p99, the share of prompt tokens the backend took from its cache, and how often the
//! scheduler held a permit (`ray_scheduler_holds_total`) or placed a request on a permit warm
//! for its family (`ray_scheduler_affinity_hits_total`).
//!
//! Needs the fixture (`tools/llama-fixture/setup.sh`). Run with
//! `cargo bench -p ray-server --bench batch_window`. Options: `RAY_BENCH_MODEL` (`large`, the
//! default), `RAY_BENCH_ROUNDS` (default 2), `RAY_BENCH_REQUESTS` (per client and cell,
//! default 8), `RAY_BENCH_MAX_TOKENS` (default 16), `RAY_BENCH_PERMITS` (default `2,1`),
//! `RAY_BENCH_LLAMA_ARGS` (default `--cache-ram 512 --cache-reuse 256`), `RAY_BENCH_JSON`
//! (write the report there).

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

const TEAMS: [&str; 8] = [
    "Aurora", "Basalt", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Harbor",
];
const CLIENTS: [usize; 3] = [1, 2, 8];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "batch_window bench: run it with `cargo bench -p ray-server --bench batch_window`"
        );
        return;
    }
    let model = std::env::var("RAY_BENCH_MODEL").unwrap_or_else(|_| "large".into());
    let missing = [fixture::binary(), fixture::model(&model)]
        .into_iter()
        .filter(|p| !p.exists())
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        println!(
            "batch_window bench SKIPPED: the llama.cpp fixture is not built (missing \
             {missing:?}); run tools/llama-fixture/setup.sh"
        );
        return;
    }
    let options = Options {
        model,
        rounds: env_number("RAY_BENCH_ROUNDS", 2),
        requests: env_number("RAY_BENCH_REQUESTS", 8),
        max_tokens: env_number("RAY_BENCH_MAX_TOKENS", 16),
        permits: std::env::var("RAY_BENCH_PERMITS")
            .unwrap_or_else(|_| "2,1".into())
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
        llama_args: std::env::var("RAY_BENCH_LLAMA_ARGS")
            .unwrap_or_else(|_| "--cache-ram 512 --cache-reuse 256".into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(&options));
    println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    if let Ok(path) = std::env::var("RAY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report")).expect("write");
    }
}

struct Options {
    model: String,
    rounds: usize,
    requests: usize,
    max_tokens: usize,
    permits: Vec<u32>,
    llama_args: String,
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The windows measured with `permits` permits: off, the profiles' former default, and a
/// larger one.
fn windows(permits: u32) -> [u64; 3] {
    if permits >= 2 {
        [0, 10, 50]
    } else {
        [0, 5, 50]
    }
}

/// Client `c`'s system prompt: its own from the first token on, about 300 tokens.
fn system(c: usize) -> String {
    let team = TEAMS[c % TEAMS.len()];
    let mut text = format!("{team} team assistant. You answer the {team} on-call engineers.");
    for rule in 1..=8 {
        text.push_str(&format!(
            " Rule {rule} of {team}: keep answers short, name the {team} service, and say what to check first."
        ));
    }
    text
}

fn question(c: usize, k: usize) -> String {
    format!("Question {k} from engineer {c}: what should I check when the queue grows?")
}

struct Ray {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Ray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_ray(client: &reqwest::Client, llama: &Llama, permits: u32, window: u64) -> Ray {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("ray.json");
    let config = fixture::ray_config(
        llama.port,
        &format!(
            r#","cache":{{"enabled":false}},"telemetry":{{"logLevel":"warn"}},
               "scheduler":{{"concurrency":{permits},"batchWindowMs":{window},
                             "maxInflightTokens":{inflight}}},
               "model":{{"adapter":{{"modelRef":"{}","launchProfile":{{"parallel":{permits}}}}}}}"#,
            llama.model,
            // The in-flight budget may not exceed the backend's context across its slots.
            inflight = 4096 * permits,
        ),
    );
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config_path)
        .env_remove("RAY_PROFILE")
        .env("RAY_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("ray.log")).unwrap())
        .spawn()
        .expect("spawn ray-server");
    let mut ray = Ray {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{}/readyz", ray.url)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return ray;
        }
        let exited = ray.child.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(ray.dir.path().join("ray.log")).unwrap_or_default();
            panic!("ray-server never became ready ({exited:?}):\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Sample {
    latency: Duration,
    completion: u64,
    prompt: u64,
    cached: u64,
}

async fn infer(
    client: &reqwest::Client,
    url: &str,
    system: &str,
    input: &str,
    max_tokens: usize,
) -> Result<Sample, String> {
    let body = serde_json::json!({
        "system": system,
        "input": input,
        "maxTokens": max_tokens,
        "temperature": 0.0,
        "seed": 7,
        "cache": false,
    });
    let sent = Instant::now();
    let response = client
        .post(format!("{url}/v1/infer"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let value: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    let latency = sent.elapsed();
    if status != 200 {
        return Err(format!("{status}: {value}"));
    }
    let tokens = &value["usage"]["tokens"];
    Ok(Sample {
        latency,
        completion: tokens["completion"].as_u64().unwrap_or(0),
        prompt: tokens["prompt"].as_u64().unwrap_or(0),
        cached: value["diagnostics"]["provider"]["tokensCached"]
            .as_u64()
            .unwrap_or(0),
    })
}

async fn counter(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{url}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

async fn cell(
    client: &reqwest::Client,
    llama: &Llama,
    options: &Options,
    permits: u32,
    clients: usize,
    window: u64,
    round: usize,
) -> serde_json::Value {
    let ray = start_ray(client, llama, permits, window).await;
    // Warm-up: each client's prefix once, one at a time, so every cell starts from the same
    // backend cache and Ray has measured a service time.
    for c in 0..clients {
        infer(
            client,
            &ray.url,
            &system(c),
            &question(c, 0),
            options.max_tokens,
        )
        .await
        .expect("warm-up");
    }
    let holds_before = counter(client, &ray.url, "ray_scheduler_holds_total").await;
    let hits_before = counter(client, &ray.url, "ray_scheduler_affinity_hits_total").await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, requests, max_tokens) = (
            client.clone(),
            ray.url.clone(),
            options.requests,
            options.max_tokens,
        );
        tasks.push(tokio::spawn(async move {
            let system = system(c);
            let mut samples = Vec::new();
            let mut errors = Vec::new();
            for k in 1..=requests {
                match infer(&client, &url, &system, &question(c, k), max_tokens).await {
                    Ok(sample) => samples.push(sample),
                    Err(error) => errors.push(error),
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (s, e) = task.await.unwrap();
        samples.extend(s);
        errors.extend(e);
    }
    let wall = started.elapsed().as_secs_f64();
    let holds = counter(client, &ray.url, "ray_scheduler_holds_total").await - holds_before;
    let hits = counter(client, &ray.url, "ray_scheduler_affinity_hits_total").await - hits_before;
    drop(ray);
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let completion: u64 = samples.iter().map(|s| s.completion).sum();
    let prompt: u64 = samples.iter().map(|s| s.prompt).sum();
    let cached: u64 = samples.iter().map(|s| s.cached).sum();
    let row = serde_json::json!({
        "permits": permits,
        "clients": clients,
        "windowMs": window,
        "round": round,
        "requests": samples.len(),
        "errors": errors.len(),
        "firstError": errors.first(),
        "seconds": wall,
        "requestsPerSecond": samples.len() as f64 / wall,
        "tokensPerSecond": completion as f64 / wall,
        "p50Ms": quantile(&latencies, 0.50),
        "p99Ms": quantile(&latencies, 0.99),
        "cachedPromptShare": if prompt == 0 { 0.0 } else { cached as f64 / prompt as f64 },
        "holds": holds,
        "affinityHits": hits,
    });
    eprintln!("{row}");
    row
}

async fn run(options: &Options) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for &permits in &options.permits {
        let parallel = permits.to_string();
        let mut extra = vec!["--parallel", parallel.as_str()];
        extra.extend(options.llama_args.split_whitespace());
        let llama = Llama::start_with(free_port(), &options.model, &extra);
        for round in 0..options.rounds {
            for clients in CLIENTS {
                let mut order = windows(permits).to_vec();
                if round % 2 == 1 {
                    order.reverse();
                }
                for window in order {
                    rows.push(
                        cell(&client, &llama, options, permits, clients, window, round).await,
                    );
                }
            }
        }
    }
    serde_json::json!({
        "model": format!("ray-{} (fixture, random weights)", options.model),
        "maxTokens": options.max_tokens,
        "requestsPerClient": options.requests,
        "llamaArgs": options.llama_args,
        "cells": rows,
    })
}
