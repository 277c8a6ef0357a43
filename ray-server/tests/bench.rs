//! `ray-server bench` against a real gateway on the mock provider (the run against a real
//! llama-server, and `--direct`, are in llama_e2e.rs): the report's numbers, baselines that
//! pass and fail, auth, and bad input.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use std::path::Path;
use std::process::Output;

use deploy_tools::{RayProcess, binary, repo_root};
use ray_server::ops::bench::report::Baseline;
use ray_server::ops::bench::workload::Workload;
use serde_json::{Value, json};

fn mock_gateway(dir: &Path, extra: Value) -> RayProcess {
    let mut config = json!({
        "profile": "tiny",
        "model": { "adapter": { "kind": "mock", "latencyMs": 20 } }
    });
    deploy_tools::merge(&mut config, &extra);
    let ray = RayProcess::start(dir, &config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", ray.port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ray
}

fn bench(ray: &RayProcess, args: &[&str]) -> Output {
    binary()
        .args(["bench", "--base-url"])
        .arg(ray.url(""))
        .args(args)
        .output()
        .unwrap()
}

fn parse_report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn workload(name: &str) -> String {
    repo_root()
        .join("examples/workloads")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn every_example_workload_and_baseline_is_readable() {
    for entry in std::fs::read_dir(repo_root().join("examples/workloads")).unwrap() {
        let path = entry.unwrap().path();
        let workload = Workload::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!workload.items.is_empty(), "{}", path.display());
    }
    for entry in std::fs::read_dir(repo_root().join("examples/baselines")).unwrap() {
        let path = entry.unwrap().path();
        let baseline = Baseline::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let workload = repo_root().join(baseline.workload_path.unwrap());
        assert!(
            workload.exists(),
            "{}: {}",
            path.display(),
            workload.display()
        );
    }
}

#[test]
fn a_run_reports_latency_throughput_caches_and_rss() {
    let dir = tempfile::tempdir().unwrap();
    let ray = mock_gateway(dir.path(), json!({}));
    let output_file = dir.path().join("report.json");
    let output = bench(
        &ray,
        &[
            "--workload",
            &workload("email-workload.jsonl"),
            "--concurrency",
            "2",
            "--requests",
            "10",
            "--label",
            "mock",
            "--output",
            output_file.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = parse_report(&output);
    assert_eq!(report["kind"], "ray-benchmark");
    assert_eq!(report["label"], "mock");
    assert_eq!(report["target"]["mode"], "ray");
    assert_eq!(report["workload"]["items"], 5);
    let summary = &report["summary"];
    assert_eq!(summary["requests"], 10);
    assert_eq!(summary["concurrency"], 2);
    assert_eq!(summary["status"]["200"], 10);
    assert_eq!(summary["errorRate"], 0.0);
    for measure in ["latencyMs", "serverLatencyMs", "queueDelayMs"] {
        let d = &summary[measure];
        assert_eq!(d["count"], 10, "{measure}");
        assert!(
            d["p50"].as_f64().unwrap() <= d["p95"].as_f64().unwrap(),
            "{measure}"
        );
        assert!(
            d["p95"].as_f64().unwrap() <= d["p99"].as_f64().unwrap(),
            "{measure}"
        );
        assert!(
            d["p99"].as_f64().unwrap() <= d["max"].as_f64().unwrap(),
            "{measure}"
        );
    }
    assert!(summary["throughputRps"].as_f64().unwrap() > 0.0);
    // The second pass over the five items is answered by the cache or joins the first.
    let reused =
        summary["responseCacheHitRate"].as_f64().unwrap() + summary["dedupeRate"].as_f64().unwrap();
    assert_eq!(reused, 50.0, "{summary}");
    // The mock has no backend timings or tokenizer.
    assert!(summary["ttftMs"].is_null());
    let gateway = &report["gateway"];
    assert!(gateway["rssMiBBefore"].as_f64().unwrap() > 0.0, "{gateway}");
    assert!(gateway["rssMiBMax"].as_f64().unwrap() >= gateway["rssMiBBefore"].as_f64().unwrap());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&output_file).unwrap()).unwrap();
    assert_eq!(written, report);
}

#[test]
fn baselines_pass_or_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ray = mock_gateway(dir.path(), json!({}));
    let write = |name: &str, assertions: Value| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            json!({
                "version": 1, "label": name,
                "workloadPath": workload("short-prompts.jsonl"),
                "concurrency": 2, "requests": 8,
                "assertions": assertions
            })
            .to_string(),
        )
        .unwrap();
        path.display().to_string()
    };
    let generous = write(
        "generous.json",
        json!({ "maxLatencyP95Ms": 60000, "maxErrorRate": 0, "minThroughputRps": 0.01,
                "maxGatewayRssMiB": 512, "minQualityPassRate": 0 }),
    );
    let output = bench(&ray, &["--baseline", &generous]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = parse_report(&output);
    assert_eq!(
        report["summary"]["requests"], 8,
        "the baseline's request count"
    );
    assert_eq!(
        report["comparison"]["passed"], true,
        "{}",
        report["comparison"]
    );
    assert_eq!(report["comparison"]["checks"].as_array().unwrap().len(), 5);
    let strict = write(
        "strict.json",
        json!({ "maxClientLatencyP95Ms": 0.001, "minThroughputRps": 0.01, "maxTtftP95Ms": 100 }),
    );
    let output = bench(&ray, &["--baseline", &strict]);
    assert_eq!(output.status.code(), Some(1));
    let report = parse_report(&output);
    let checks = report["comparison"]["checks"].as_array().unwrap();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    // The mock reports no time to first token: a threshold on it cannot pass.
    assert_eq!(failed, vec!["maxClientLatencyP95Ms", "maxTtftP95Ms"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("regression: maxClientLatencyP95Ms is"),
        "{stderr}"
    );
    assert!(stderr.contains("maxTtftP95Ms is not measured"), "{stderr}");
    let unknown = write(
        "unknown.json",
        json!({ "maxLatencyP95Ms": 1, "minVibes": 3 }),
    );
    let output = bench(&ray, &["--baseline", &unknown]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("minVibes"));
}

#[test]
fn the_api_key_comes_from_the_flag_or_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let key = "bench-key-0123456789abcdef0123456789";
    let config = dir.path().join("auth.json");
    let port = deploy_tools::free_port();
    let gateway_config = json!({
        "profile": "tiny",
        "server": { "port": port },
        "model": { "adapter": { "kind": "mock", "latencyMs": 1 } },
        "auth": { "enabled": true, "apiKeyEnv": "BENCH_TEST_KEYS" }
    });
    std::fs::write(&config, gateway_config.to_string()).unwrap();
    let mut gateway = binary()
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_TEST_KEYS", key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = |extra: &[&str], env: Option<&str>| {
        let mut command = binary();
        command
            .args([
                "bench",
                "--workload",
                &workload("short-prompts.jsonl"),
                "--requests",
                "2",
            ])
            .args(extra);
        if let Some(value) = env {
            command.env("BENCH_TEST_KEYS", value);
        }
        command.output().unwrap()
    };
    let base = format!("http://127.0.0.1:{port}");
    // No key: every request is refused.
    let output = run(&["--base-url", &base], None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        parse_report(&output)["summary"]["errors"]["unauthorized"],
        2
    );
    let output = run(&["--base-url", &base, "--api-key", key], None);
    assert!(output.status.success());
    // From the config: its address and the variable auth.apiKeyEnv names.
    let output = run(&["--config", config.to_str().unwrap()], Some(key));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(parse_report(&output)["target"]["baseUrl"], base);
    let _ = gateway.kill();
    let _ = gateway.wait();
}

#[test]
fn bad_input_is_a_usage_error_and_an_absent_gateway_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"input\":\"ok\"}\n{\"input\":\"x\",\"benchmark\":{\"mustRhyme\":true}}\n",
    )
    .unwrap();
    let output = binary()
        .args(["bench", "--workload"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("item 2") && stderr.contains("mustRhyme"),
        "{stderr}"
    );
    let output = binary().args(["bench"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--workload"));
    let output = binary()
        .args([
            "bench",
            "--base-url",
            "https://ray.example.com",
            "--workload",
        ])
        .arg(workload("short-prompts.jsonl"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let port = deploy_tools::free_port();
    let output = binary()
        .args([
            "bench",
            "--base-url",
            &format!("http://127.0.0.1:{port}"),
            "--workload",
        ])
        .arg(workload("short-prompts.jsonl"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach"));
}
