//! The log of a real `ray-server` process under a 10x overload stays small with the default
//! `telemetry.accessLog`: refusals are summarised at most once a second per code, and the
//! counts on the summary lines add up to the refusals `/metrics` counted. A dead backend under
//! load writes one failure line a second per code, whose counts add up to the failures.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the overload runs: `RAY_LOG_VOLUME_SECONDS`, default 10.
fn overload_seconds() -> u64 {
    std::env::var("RAY_LOG_VOLUME_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// The log bound of the default policy for ten seconds of overload.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_ten_times_overload_write_under_a_megabyte_of_summaries() {
    const CONCURRENCY: u64 = 1;
    const MAX_QUEUE: u64 = 4;
    // Clients on their own keep-alive connection each (below the gateway's 256-connection cap,
    // so none waits to be accepted), against a gateway that holds five requests (one running,
    // four waiting); each sends again as soon as it has an answer.
    let clients: u64 = 192;
    let seconds = overload_seconds();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ray.json");
    // The sub1b profile as deployed (accessLog left to the profile), on the mock backend.
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"sub1b","server":{{"port":0}},
                "model":{{"adapter":{{"kind":"mock","latencyMs":200}}}},
                "scheduler":{{"concurrency":{CONCURRENCY},"maxQueue":{MAX_QUEUE},
                              "affinityLookahead":{MAX_QUEUE}}},
                "gracefulDegradation":{{"queueDepthThreshold":3}},
                "rateLimit":{{"enabled":false}},
                "cache":{{"enabled":false}}}}"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config)
        .env_remove("RAY_PROFILE")
        .env_remove("RAY_LOG_LEVEL")
        .env_remove("RAY_ACCESS_LOG")
        .env_remove("RAY_TELEMETRY_ACCESS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let stdout_bytes = Arc::new(AtomicU64::new(0));
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let stdout_reader = {
        let bytes = stdout_bytes.clone();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                let json: serde_json::Value = serde_json::from_str(&line).unwrap();
                if json["message"] == "gateway listening" {
                    let _ = port_tx.send(json["port"].as_u64().unwrap());
                }
                lines.push(json);
            }
            lines
        })
    };
    let port = port_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let ready_by = std::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(std::time::Instant::now() < ready_by, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bytes_before = stdout_bytes.load(Ordering::Relaxed);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut flood = Vec::new();
    for client in 0..clients {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("{base}/v1/infer");
        flood.push(tokio::spawn(async move {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                n += 1;
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"input": format!("client {client} request {n}")}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                let code = match status {
                    200 => "ok".to_string(),
                    _ => body["error"]["code"].as_str().unwrap().to_string(),
                };
                *seen.entry(code).or_default() += 1;
            }
            seen
        }));
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for client in flood {
        for (code, count) in client.await.unwrap() {
            *seen.entry(code).or_default() += count;
        }
    }
    let bytes_during = stdout_bytes.load(Ordering::Relaxed) - bytes_before;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let lines = stdout_reader.join().unwrap();
    let stderr_text = stderr_reader.join().unwrap();
    let total_bytes = stdout_bytes.load(Ordering::Relaxed) + stderr_text.len() as u64;

    let requests: u64 = seen.values().sum();
    let queue_full = metric(r#"ray_request_errors_total{code="queue_full"}"#);
    let rejected: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "request rejected")
        .collect();
    let mut summarised: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in &rejected {
        assert_eq!(line["level"], "warn", "{line}");
        let entry = summarised
            .entry(line["code"].as_str().unwrap().to_string())
            .or_default();
        entry.0 += 1;
        entry.1 += line["count"].as_u64().unwrap();
    }
    eprintln!(
        "{clients} clients for {seconds} s: {requests} requests {seen:?}; log: {bytes_during} \
         bytes during the overload, {total_bytes} bytes in all ({} lines, {} on stderr); \
         refusal lines by code (lines, summed count): {summarised:?}",
        lines.len(),
        stderr_text.lines().count()
    );

    // It was an overload: most requests were refused.
    assert!(
        seen.get("queue_full").copied().unwrap_or(0) > requests / 2,
        "{seen:?}"
    );
    assert!(seen.get("ok").copied().unwrap_or(0) > 0, "{seen:?}");
    // The whole log, start and shutdown included, is under the bound.
    assert!(total_bytes < MAX_LOG_BYTES, "{total_bytes} bytes of log");
    // No successful request wrote a line (accessLog: errors), and no refusal wrote its own.
    assert!(
        !lines.iter().any(|l| l["message"] == "request completed"),
        "a success line with the default policy"
    );
    assert!(
        !lines.iter().any(|l| l["message"] == "inference rejected"),
        "a refusal logged twice"
    );
    // The summary lines carry every refusal once: their counts add up to what the clients saw
    // and what /metrics counted.
    let (queue_full_lines, queue_full_logged) = summarised["queue_full"];
    assert_eq!(Some(queue_full), seen.get("queue_full").copied());
    assert_eq!(queue_full_logged, queue_full, "{summarised:?}");
    for (code, (_, logged)) in &summarised {
        assert_eq!(
            Some(*logged),
            seen.get(code).copied(),
            "{code}: {summarised:?}"
        );
    }
    // At most one line a second per code (plus the first at once and the last at shutdown).
    assert!(
        queue_full_lines <= seconds + 3,
        "{queue_full_lines} queue_full lines in {seconds} s"
    );
    assert!(queue_full_lines >= 2, "{queue_full_lines} queue_full lines");
    // Every line that stands for folded refusals says so.
    for line in lines.iter().filter(|l| l["message"] == "request rejected") {
        if line["count"].as_u64().unwrap_or(1) > 1 {
            assert_eq!(line["summary"], true, "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_under_load_writes_one_failure_line_a_second_with_its_count() {
    // A backend address nobody listens on.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":0}},
                "model":{{"warmOnBoot":false,"adapter":{{"kind":"openai-compatible",
                    "baseUrl":"http://127.0.0.1:{dead_port}","timeoutMs":1000}}}},
                "cache":{{"enabled":false}}}}"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config)
        .env_remove("RAY_PROFILE")
        .env_remove("RAY_LOG_LEVEL")
        .env_remove("RAY_ACCESS_LOG")
        .env_remove("RAY_TELEMETRY_ACCESS_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if json["message"] == "gateway listening" {
            break json["port"].as_u64().unwrap();
        }
    };
    let stdout_reader = std::thread::spawn(move || lines.map(Result::unwrap).collect::<Vec<_>>());
    let url = format!("http://127.0.0.1:{port}/v1/infer");

    // 40 clients, 10 requests each, as fast as the gateway answers.
    let mut clients = Vec::new();
    for client in 0..40 {
        let http = reqwest::Client::new();
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            for n in 0..10 {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"input": format!("client {client} request {n}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().as_u16() >= 500, "{}", response.status());
                let body: serde_json::Value = response.json().await.unwrap();
                *codes
                    .entry(body["error"]["code"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            codes
        }));
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for client in clients {
        for (code, count) in client.await.unwrap() {
            *seen.entry(code).or_default() += count;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let mut all: Vec<serde_json::Value> = stdout_reader
        .join()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    all.extend(
        stderr_reader
            .join()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
    );

    // Every failure is in exactly one access line's count, per code; the same for the
    // runtime's own line when the failure is not a refusal.
    let sum = |message: &str, code: &str| -> (u64, u64) {
        all.iter()
            .filter(|l| l["message"] == message && l["code"] == code)
            .fold((0, 0), |(lines, total), l| {
                (lines + 1, total + l["count"].as_u64().unwrap())
            })
    };
    eprintln!("dead backend: clients saw {seen:?}");
    assert_eq!(seen.values().sum::<u64>(), 400);
    for (code, count) in &seen {
        let failed = sum("request failed", code);
        let rejected = sum("request rejected", code);
        let (lines, logged) = (failed.0 + rejected.0, failed.1 + rejected.1);
        eprintln!("{code}: {count} answers, {lines} access lines carrying {logged}");
        assert_eq!(logged, *count, "{code}");
        assert!(
            lines <= 8,
            "{lines} access lines for {count} {code} answers"
        );
        let inference = sum("inference failed", code);
        if failed.0 > 0 {
            assert_eq!(inference.1, *count, "{code}: {inference:?}");
            assert!(inference.0 <= 8, "{inference:?}");
        }
    }
}
