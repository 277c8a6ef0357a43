//! Cluster benchmark, in one run against one `nats-server -js` on loopback:
//!
//! 1. **Forwarding**: the latency of `/v1/infer` sent to a node whose model is down (it forwards
//!    to a peer) against the same request sent to the peer directly (mock, latency 0, cache
//!    off), one client, sequential. The difference is what one hop costs.
//! 2. **Jobs**: the time for N jobs submitted to one node to complete, with one node and then
//!    three nodes pulling from the shared queue (mock latency `RAY_BENCH_JOB_LATENCY_MS`,
//!    default 50 ms, two jobs at once per node).
//!
//! Run with `cargo bench -p ray-server --bench cluster` (needs `nats-server` on `PATH`).
//! `RAY_BENCH_REQUESTS` (forwarding requests per path, default 1000), `RAY_BENCH_JOBS` (default
//! 300).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{free_port, post_until_done};

const KEY: &str = "a-cluster-key-of-enough-bytes";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run it with `cargo bench -p ray-server --bench cluster`");
        return;
    }
    let requests: usize = env_or("RAY_BENCH_REQUESTS", 1_000);
    let jobs: usize = env_or("RAY_BENCH_JOBS", 300);
    let job_latency: u64 = env_or("RAY_BENCH_JOB_LATENCY_MS", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats_port = free_port();
        let Some(_nats) = Nats::start(&dir.path().join("nats"), nats_port) else {
            println!("SKIPPED: nats-server is not installed (Debian package nats-server)");
            return;
        };
        forwarding(dir.path(), nats_port, requests).await;
        job_throughput(dir.path(), nats_port, jobs, job_latency).await;
    });
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn forwarding(dir: &Path, nats: u16, requests: usize) {
    let down = Node::start(dir, nats, "fwd-a", false, 0, "");
    let up = Node::start(dir, nats, "fwd-b", true, 0, "");
    let http = reqwest::Client::new();
    // Wait until a forwards (its model seen down, b's record seen ready).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .post(down.url("/v1/infer"))
            .json(&serde_json::json!({"input": "warm", "model": "m"}))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the first node never forwarded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let direct = run_sequential(up.port, requests).await;
    let forwarded = run_sequential(down.port, requests).await;
    let (d50, d99) = percentiles(direct);
    let (f50, f99) = percentiles(forwarded);
    println!(
        "{}",
        serde_json::json!({
            "bench": "cluster_forwarding",
            "requests": requests,
            "direct_p50_us": d50, "direct_p99_us": d99,
            "forwarded_p50_us": f50, "forwarded_p99_us": f99,
            "added_p50_us": f50.saturating_sub(d50),
            "ratio_p50": f50 as f64 / d50.max(1) as f64,
        })
    );
}

async fn run_sequential(port: u16, requests: usize) -> Vec<Duration> {
    let errors = AtomicU64::new(0);
    let mut n = 0usize;
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    post_until_done(
        addr,
        "/v1/infer",
        200,
        || {
            n += 1;
            (n <= requests).then(|| format!(r#"{{"input":"request {n}","model":"m"}}"#))
        },
        &errors,
    )
    .await
}

fn percentiles(mut latencies: Vec<Duration>) -> (u64, u64) {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(0, |d| d.as_micros() as u64)
    };
    (at(0.5), at(0.99))
}

async fn job_throughput(dir: &Path, nats: u16, jobs: usize, latency: u64) {
    let mut results = Vec::new();
    for nodes in [1usize, 3] {
        // Each round uses its own model name, so the rounds' queues are apart.
        let model = format!("jobs{nodes}");
        let extra = format!(
            r#","asyncQueue":{{"enabled":true,"storageDir":"{}","dispatchConcurrency":2,
               "maxJobs":2000}}"#,
            dir.join(format!("store-{nodes}")).display()
        );
        let running: Vec<Node> = (0..nodes)
            .map(|i| {
                Node::start_model(
                    dir,
                    nats,
                    &format!("jobs{nodes}-{i}"),
                    &model,
                    latency,
                    &extra,
                )
            })
            .collect();
        let http = reqwest::Client::new();
        let mut ids = Vec::with_capacity(jobs);
        let started = Instant::now();
        for n in 0..jobs {
            // Until the node has reached NATS its job queue answers 503 cluster_unavailable.
            let answer = loop {
                let answer = http
                    .post(running[0].url("/v1/jobs"))
                    .json(&serde_json::json!({"input": format!("job {n}"), "model": model}))
                    .send()
                    .await
                    .expect("submit");
                if answer.status() != 503 {
                    break answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(answer.status(), 202);
            let body: serde_json::Value = answer.json().await.expect("json");
            ids.push(body["id"].as_str().expect("id").to_string());
        }
        let submitted = started.elapsed();
        let mut pending = ids;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for id in pending {
                let record: serde_json::Value = http
                    .get(running[0].url(&format!("/v1/jobs/{id}")))
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                if record["status"] != "succeeded" {
                    still.push(id);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let took = started.elapsed();
        results.push((nodes, took));
        println!(
            "{}",
            serde_json::json!({
                "bench": "cluster_jobs",
                "nodes": nodes,
                "jobs": jobs,
                "job_latency_ms": latency,
                "submit_ms": submitted.as_millis() as u64,
                "complete_ms": took.as_millis() as u64,
                "jobs_per_second": jobs as f64 / took.as_secs_f64(),
            })
        );
        drop(running);
    }
    if let [(_, one), (_, three)] = results[..] {
        println!(
            "{}",
            serde_json::json!({
                "bench": "cluster_jobs_speedup",
                "three_nodes_over_one": one.as_secs_f64() / three.as_secs_f64(),
            })
        );
    }
}

struct Nats(Child);

impl Nats {
    fn start(dir: &Path, port: u16) -> Option<Nats> {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nats(child))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Node {
    port: u16,
    child: Child,
}

impl Node {
    /// A node whose model `m` is the mock (latency 0, cache off) when `up`, else a refused port.
    fn start(dir: &Path, nats: u16, id: &str, up: bool, latency: u64, extra: &str) -> Node {
        let adapter = if up {
            format!(r#"{{"kind":"mock","latencyMs":{latency}}}"#)
        } else {
            format!(
                r#"{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{}","timeoutMs":1000}}"#,
                free_port()
            )
        };
        Node::spawn(dir, nats, id, "m", &adapter, extra)
    }

    fn start_model(
        dir: &Path,
        nats: u16,
        id: &str,
        model: &str,
        latency: u64,
        extra: &str,
    ) -> Node {
        let adapter = format!(r#"{{"kind":"mock","latencyMs":{latency}}}"#);
        Node::spawn(dir, nats, id, model, &adapter, extra)
    }

    fn spawn(dir: &Path, nats: u16, id: &str, model: &str, adapter: &str, extra: &str) -> Node {
        let port = free_port();
        let config = format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},"cache":{{"enabled":false}},
                "telemetry":{{"accessLog":"off"}},
                "rateLimit":{{"enabled":false}},
                "scheduler":{{"concurrency":8,"maxQueue":256}},
                "models":[{{"id":"{model}","warmOnBoot":false,"adapter":{adapter}}}],
                "cluster":{{"natsUrls":["nats://127.0.0.1:{nats}"],"nodeId":"{id}",
                  "advertiseUrl":"http://127.0.0.1:{port}","heartbeatMs":300,
                  "clusterKeyEnv":"RAY_BENCH_CLUSTER_KEY"}}{extra}}}"#
        );
        let path = dir.join(format!("{id}.json"));
        std::fs::write(&path, config).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
            .arg("--config")
            .arg(&path)
            .env("RAY_BENCH_CLUSTER_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ray-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ray-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
