//! Priority and fair admission under load, against a release `ray-server` with the mock backend
//! (100 ms a request, two permits):
//!
//! 1. key B alone, one interactive request at a time: its latency p50 and p99;
//! 2. the same while key A floods with 64 concurrent `batch` requests: B's p50 and p99, how much
//!    A completed, and A's longest queue wait against the batch bound;
//! 3. A and B both flood with interactive requests, weights 1 and 3: the served ratio;
//! 4. ten times the capacity, mixed classes, for 10 s: what every request got, how fast the
//!    refusals came, and the server's RSS before, at its peak and after.
//!
//! Run with `cargo bench -p ray-server --bench priority`; `RAY_BENCH_JSON` writes the report.

#[allow(dead_code)] // the shared client loop is not used here
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::free_port;
use ray_core::wire::{InferRequest, Priority, PriorityClass};
use ray_sdk::RayClient;

const KEY_A: &str = "key-flood-a";
const KEY_B: &str = "key-steady-b";
/// `printf %s key-flood-a | sha256sum | cut -c1-8`, and the same for `key-steady-b`.
const KEY_A_ID: &str = "e3b9f848";
const KEY_B_ID: &str = "af8b7cf0";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("priority bench: run it with `cargo bench -p ray-server --bench priority`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run());
    println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    if let Ok(path) = std::env::var("RAY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report")).expect("write");
    }
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn client(&self, key: &str) -> RayClient {
        RayClient::builder(&self.base)
            .api_key(key)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = dir.path().join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},
                "model":{{"adapter":{{"kind":"mock","latencyMs":100}}}},
                "scheduler":{{"concurrency":2,"maxQueue":256,"maxQueuedTokens":262144,
                              "requestTimeoutMs":60000,"dedupeInflight":false}},
                "cache":{{"enabled":false}},
                "auth":{{"enabled":true}},
                "rateLimit":{{"enabled":false}},
                "telemetry":{{"logLevel":"warn","accessLog":"errors"}},
                "priority":{{"apiKeys":[{{"id":"{KEY_A_ID}","weight":1}},
                                        {{"id":"{KEY_B_ID}","weight":3}}]}}}}"#
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config)
        .env_remove("RAY_PROFILE")
        .env("RAY_API_KEYS", format!("{KEY_A},{KEY_B}"))
        .env("MALLOC_ARENA_MAX", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ray-server");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..200 {
        if server.client(KEY_B).live().await.unwrap_or(false) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("ray-server did not start");
}

fn request(text: String, class: PriorityClass) -> InferRequest {
    InferRequest {
        max_tokens: Some(8),
        ..InferRequest::new(text)
    }
    .with_priority(Priority::of(class))
}

#[derive(serde::Serialize)]
struct Latencies {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarise(mut samples: Vec<Duration>) -> Latencies {
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
    };
    Latencies {
        count: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

async fn steady_b(server: &Server, count: usize) -> Vec<Duration> {
    let b = server.client(KEY_B);
    let mut latencies = Vec::new();
    for i in 0..count {
        let sent = Instant::now();
        b.infer(&request(
            format!("steady {i} {sent:?}"),
            PriorityClass::Interactive,
        ))
        .await
        .expect("B's request");
        latencies.push(sent.elapsed());
    }
    latencies
}

#[derive(serde::Serialize)]
struct Report {
    b_alone: Latencies,
    b_during_batch_flood: Latencies,
    service_time_ms: f64,
    a_batch_completed_during_b: u64,
    a_batch_longest_queue_wait_ms: u64,
    a_batch_bound_ms: u64,
    a_errors: u64,
    weights_1_3_served: (u64, u64),
    overload: Overload,
}

#[derive(serde::Serialize)]
struct Overload {
    offered_per_second: u64,
    seconds: u64,
    served: u64,
    refused_queue_wait_exceeds_deadline: u64,
    refused_queue_full: u64,
    refused_without_retry_after: u64,
    timed_out: u64,
    other: u64,
    refusal_latency: Latencies,
    rss_kib_before: u64,
    rss_kib_peak: u64,
    rss_kib_after: u64,
}

async fn run() -> Report {
    let server = start().await;
    // Warm-up: the scheduler measures a service time.
    steady_b(&server, 5).await;
    let b_alone = steady_b(&server, 50).await;

    // Phase 2: A floods with batch work while B sends one request at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let longest = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for worker in 0..64 {
        let client = server.client(KEY_A);
        let (stop, completed, longest, errors) = (
            stop.clone(),
            completed.clone(),
            longest.clone(),
            errors.clone(),
        );
        flood.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match client
                    .infer(&request(
                        format!("flood {worker} {n}"),
                        PriorityClass::Batch,
                    ))
                    .await
                {
                    Ok(response) => {
                        let wait = response
                            .diagnostics
                            .scheduler
                            .as_ref()
                            .map_or(0, |s| s.priority.queue_wait_ms);
                        longest.fetch_max(wait, Ordering::SeqCst);
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = completed.load(Ordering::SeqCst);
    let b_during = steady_b(&server, 50).await;
    let a_completed = completed.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    for task in flood {
        let _ = task.await;
    }
    let health = server.client(KEY_B).health().await.expect("health");
    let priority = &health.runtime.queue.priority;
    let service_time_ms = priority.service_time_estimate_ms.unwrap_or(0) as f64;
    let batch_bound = priority.max_wait_ms.get("batch").copied().unwrap_or(0);

    // Phase 3: both flood with interactive work, weights 1 and 3.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut workers = Vec::new();
    for (index, key) in [KEY_A, KEY_B].into_iter().enumerate() {
        for worker in 0..16 {
            let client = server.client(key);
            let (stop, served) = (stop.clone(), served.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let text = format!("{key} {worker} {n}");
                    if client
                        .infer(&request(text, PriorityClass::Interactive))
                        .await
                        .is_ok()
                        && !stop.load(Ordering::SeqCst)
                    {
                        served[index].fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        let _ = worker.await;
    }
    let weights = (
        served[0].load(Ordering::SeqCst),
        served[1].load(Ordering::SeqCst),
    );

    // Phase 4: ten times the capacity (2 permits / 100 ms = 20 a second), for 10 s.
    let rss_before = server.rss_kib();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        let pid = server.child.id();
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let offered = 200u64;
    let seconds = 10u64;
    let clients = [server.client(KEY_A), server.client(KEY_B)];
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..offered * seconds {
        let due = started + Duration::from_micros(i * 1_000_000 / offered);
        tokio::time::sleep_until(due.into()).await;
        let client = clients[(i % 2) as usize].clone();
        let class = PriorityClass::ALL[(i % 3) as usize];
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = client.infer(&request(format!("overload {i}"), class)).await;
            (result, sent.elapsed())
        }));
    }
    let mut overload = Overload {
        offered_per_second: offered,
        seconds,
        served: 0,
        refused_queue_wait_exceeds_deadline: 0,
        refused_queue_full: 0,
        refused_without_retry_after: 0,
        timed_out: 0,
        other: 0,
        refusal_latency: summarise(Vec::new()),
        rss_kib_before: rss_before,
        rss_kib_peak: 0,
        rss_kib_after: 0,
    };
    let mut refusal_latencies = Vec::new();
    for task in tasks {
        let (result, elapsed) = task.await.expect("task");
        match result {
            Ok(_) => overload.served += 1,
            Err(error) => {
                use ray_core::ErrorCode::*;
                match error.code() {
                    Some(QueueWaitExceedsDeadline) => {
                        overload.refused_queue_wait_exceeds_deadline += 1;
                        refusal_latencies.push(elapsed);
                    }
                    Some(QueueFull) => {
                        overload.refused_queue_full += 1;
                        refusal_latencies.push(elapsed);
                    }
                    Some(RequestTimeout) => overload.timed_out += 1,
                    _ => overload.other += 1,
                }
                if error.status() == Some(503) && error.retry_after().is_none() {
                    overload.refused_without_retry_after += 1;
                }
            }
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    overload.refusal_latency = summarise(refusal_latencies);
    overload.rss_kib_peak = peak.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    overload.rss_kib_after = server.rss_kib();

    Report {
        b_alone: summarise(b_alone),
        b_during_batch_flood: summarise(b_during),
        service_time_ms,
        a_batch_completed_during_b: a_completed,
        a_batch_longest_queue_wait_ms: longest.load(Ordering::SeqCst),
        a_batch_bound_ms: batch_bound,
        a_errors: errors.load(Ordering::SeqCst),
        weights_1_3_served: weights,
        overload,
    }
}
