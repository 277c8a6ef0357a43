//! Supervised mode with stand-in backends (shell scripts), run as the real binary: readiness
//! follows the child, its output reaches the gateway's log, crashes are restarted with backoff,
//! and shutdown stops the child without leaving zombies. The end-to-end test with the real
//! `llama-server` is in llama_e2e.rs.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use std::path::Path;
use std::time::Duration;

use deploy_tools::{RayProcess, free_port, process_exists, write_executable};
use serde_json::json;

fn supervised_config(binary: &Path) -> serde_json::Value {
    let port = free_port();
    json!({
        "profile": "sub1b",
        "model": { "adapter": {
            "kind": "llama.cpp",
            "baseUrl": format!("http://127.0.0.1:{port}"),
            "launchProfile": {
                "binaryPath": binary.display().to_string(),
                "modelPath": "/var/lib/ray/models/none.gguf",
                "port": port,
                "supervise": true
            }
        } },
        "rateLimit": { "enabled": false }
    })
}

const LIMIT: Duration = Duration::from_secs(30);

/// Waits until the child is "starting" and returns its pid.
async fn started_child(ray: &RayProcess) -> u64 {
    ray.wait_for("the child to start", LIMIT, || async {
        ray.backend_process()
            .await
            .is_some_and(|p| p["state"] == "starting")
    })
    .await;
    ray.backend_process().await.unwrap()["pid"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_starting_backend_is_warming_and_its_output_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("llama-server");
    // Prints a line, then never listens: the backend stays "starting".
    write_executable(
        &script,
        "#!/bin/sh\necho \"stand-in llama-server: $1 $2\" >&2\nexec sleep 1000\n",
    );
    let ray = RayProcess::start(dir.path(), &supervised_config(&script));
    let pid = started_child(&ray).await;
    let (status, ready) = ray.get("/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(ready["providerStatus"], "warming", "{ready}");
    assert_eq!(ready["reasons"][0], "provider_warming", "{ready}");
    // Requests are refused while it starts, with Retry-After.
    let response = reqwest::Client::new()
        .post(ray.url("/v1/infer"))
        .json(&json!({ "input": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_warming", "{body}");
    ray.wait_for("the child's output in the log", LIMIT, || async {
        ray.log().iter().any(|l| {
            l["source"] == "llama-server"
                && l["stream"] == "stderr"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("stand-in llama-server: --model /var/lib/ray"))
        })
    })
    .await;
    assert!(process_exists(pid));
    let (code, log) = ray.terminate();
    assert_eq!(code, Some(0));
    assert!(!process_exists(pid), "the child {pid} outlived the gateway");
    assert!(
        log.iter().any(|l| l["message"] == "llama-server stopped"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_crashing_backend_is_restarted_with_backoff_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("llama-server");
    write_executable(
        &script,
        "#!/bin/sh\necho 'error: failed to load model' >&2\nexit 3\n",
    );
    let ray = RayProcess::start(dir.path(), &supervised_config(&script));
    let exit_lines = || {
        ray.log()
            .into_iter()
            .filter(|l| l["message"] == "llama-server exited; restarting it")
            .collect::<Vec<_>>()
    };
    ray.wait_for("two restarts in the log", LIMIT, || async {
        exit_lines().len() >= 2
    })
    .await;
    let process = ray.backend_process().await.unwrap();
    assert!(process["restarts"].as_u64().unwrap() >= 2, "{process}");
    let (_, ready) = ray.get("/readyz").await.unwrap();
    assert!(
        ready["reasons"][0] == "provider_unavailable" || ready["reasons"][0] == "provider_warming",
        "{ready}"
    );
    let exits = exit_lines();
    assert_eq!(exits[0]["exit"], "exit status 3");
    // Backoff: 1 s after the first quick failure, 2 s after the second.
    assert_eq!(exits[0]["restart_in_ms"], 1000);
    assert_eq!(exits[1]["restart_in_ms"], 2000);
    assert!(
        ray.log()
            .iter()
            .any(|l| l["source"] == "llama-server" && l["message"] == "error: failed to load model")
    );
    assert!(
        ray.zombie_children().is_empty(),
        "{:?}",
        ray.zombie_children()
    );
    let (code, _) = ray.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_backend_that_ignores_sigterm_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("llama-server");
    write_executable(
        &script,
        "#!/bin/sh\ntrap '' TERM\necho ready >&2\nwhile :; do sleep 1; done\n",
    );
    let ray = RayProcess::start(dir.path(), &supervised_config(&script));
    let pid = started_child(&ray).await;
    let (code, log) = ray.terminate();
    assert_eq!(code, Some(0));
    assert!(!process_exists(pid));
    assert!(
        log.iter()
            .any(|l| l["message"] == "llama-server ignored SIGTERM; killing it"),
        "{log:?}"
    );
    let stopped = log
        .iter()
        .find(|l| l["message"] == "llama-server stopped")
        .unwrap();
    assert_eq!(stopped["exit"], "killed by signal 9");
}

#[tokio::test]
async fn a_child_dies_with_a_gateway_killed_with_sigkill() {
    if ray_runtime::backend::child::setpriv().is_none() {
        deploy_tools::skipped(
            "a_child_dies_with_a_gateway_killed_with_sigkill",
            "setpriv (util-linux) is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("llama-server");
    // Ignores SIGTERM too: only the kernel's parent-death SIGKILL can end it.
    write_executable(&script, "#!/bin/sh\ntrap '' TERM\nexec sleep 1000\n");
    let mut ray = RayProcess::start(dir.path(), &supervised_config(&script));
    let pid = started_child(&ray).await;
    assert!(!deploy_tools::exited(pid as u32));
    ray.child.kill().unwrap();
    ray.child.wait().unwrap();
    let killed = std::time::Instant::now();
    while !deploy_tools::exited(pid as u32) {
        assert!(
            killed.elapsed() < LIMIT,
            "the child {pid} outlived a gateway killed with SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_binary_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ray = RayProcess::start(
        dir.path(),
        &supervised_config(&dir.path().join("no-such-llama-server")),
    );
    ray.wait_for("the start failure", LIMIT, || async {
        ray.backend_process().await.is_some_and(|p| {
            p["state"] == "exited"
                && p["exit"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("cannot start") && e.contains("No such file"))
        })
    })
    .await;
    let (status, ready) = ray.get("/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(ready["reasons"][0], "provider_unavailable", "{ready}");
    let (code, _) = ray.terminate();
    assert_eq!(code, Some(0));
}
