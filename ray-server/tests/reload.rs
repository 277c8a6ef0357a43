//! Hot reload, run as the real binary: SIGHUP and `ray-server reload` read the config file
//! again; models, routing and rate limits change without cutting a request in progress; a
//! change that needs a restart is named; a config that does not load changes nothing; each
//! reload is a `config_reloaded` hook event. The admin route's guard is tested in-process.
#![allow(clippy::unwrap_used)]

mod deploy_tools;
mod util;

use std::path::Path;
use std::time::Duration;

use deploy_tools::{RayProcess, binary};
use ray_core::config::ConfigLoader;
use ray_runtime::Runtime;
use ray_server::App;
use ray_server::gateway::reload::ReloadSource;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn config(models: Value, max_requests: u32, events: &Path) -> Value {
    json!({
        "profile": "tiny",
        "models": models,
        "rateLimit": { "enabled": true, "maxRequests": max_requests, "windowMs": 60000 },
        "hooks": [{
            "events": ["config_reloaded"],
            "command": ["/bin/sh", "-c", format!("cat >> {}", events.display())],
        }],
    })
}

/// Writes `config` as the running gateway's file (keeping the port it was started on, unless
/// `port` says another).
fn rewrite(ray: &RayProcess, dir: &Path, config: &Value, port: Option<u16>) {
    let mut config = config.clone();
    config["server"] = json!({ "port": port.unwrap_or(ray.port) });
    std::fs::write(
        dir.join("ray.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}

async fn model_ids(ray: &RayProcess) -> Vec<String> {
    let (_, models) = ray.get("/v1/models").await.unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

async fn infer(port: u16, model: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/infer"))
        .json(&json!({ "input": "hello", "model": model }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let limit = response
        .headers()
        .get("x-ratelimit-limit")
        .map(|v| v.to_str().unwrap().to_string());
    (status, limit, response.json().await.unwrap_or(Value::Null))
}

fn reloaded_lines(ray: &RayProcess) -> usize {
    ray.log()
        .iter()
        .filter(|l| l["message"] == "config reloaded")
        .count()
}

#[tokio::test]
async fn a_reload_changes_models_and_limits_without_cutting_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let first = config(
        json!([
            { "id": "a", "adapter": { "kind": "mock", "latencyMs": 0, "seed": "a" } },
            { "id": "slow", "adapter": { "kind": "mock", "latencyMs": 2000, "seed": "slow" } },
        ]),
        100,
        &events,
    );
    let ray = RayProcess::start(dir.path(), &first);
    ray.wait_for("the gateway", LIMIT, || async {
        ray.get("/livez").await.is_some()
    })
    .await;
    assert_eq!(model_ids(&ray).await, vec!["a", "slow"]);

    // A request to `slow` is in progress while its model is removed.
    let port = ray.port;
    let running = tokio::spawn(async move { infer(port, "slow").await });
    ray.wait_for("the slow request", LIMIT, || async {
        let (_, metrics) = ray.get("/health").await.unwrap_or((0, Value::Null));
        metrics["inFlight"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let second = config(
        json!([
            { "id": "a", "adapter": { "kind": "mock", "latencyMs": 0, "seed": "a" } },
            { "id": "c", "adapter": { "kind": "mock", "latencyMs": 0, "seed": "c" } },
        ]),
        50,
        &events,
    );
    rewrite(&ray, dir.path(), &second, None);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &ray.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    ray.wait_for("the reload", LIMIT, || async { reloaded_lines(&ray) == 1 })
        .await;
    assert_eq!(model_ids(&ray).await, vec!["a", "c"]);
    let (status, limit, body) = infer(ray.port, "c").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(limit.as_deref(), Some("50"), "the new rate limit applies");
    let (status, _, body) = infer(ray.port, "slow").await;
    assert_eq!(status, 404, "a removed model takes no new request: {body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, _, body) = running.await.unwrap();
    assert_eq!(status, 200, "the request in progress was not cut: {body}");
    assert_eq!(body["model"], "slow");

    // A config that does not load changes nothing: `reload` says why and exits 1.
    let mut broken = second.clone();
    broken["scheduler"] = json!({ "concurrency": 0 });
    rewrite(&ray, dir.path(), &broken, None);
    let output = binary()
        .args(["reload", "--config"])
        .arg(dir.path().join("ray.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("scheduler.concurrency"), "{stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    // The gateway refuses it too (SIGHUP), and logs why.
    std::process::Command::new("kill")
        .args(["-HUP", &ray.child.id().to_string()])
        .status()
        .unwrap();
    ray.wait_for("the refusal", LIMIT, || async {
        ray.log().iter().any(|l| {
            l["message"] == "config reload refused"
                && l["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("scheduler.concurrency"))
        })
    })
    .await;
    assert_eq!(model_ids(&ray).await, vec!["a", "c"]);

    // The listen address waits for a restart: named in the answer and the log; the rest
    // applies. `--url` reaches the gateway where it still listens.
    let third = config(
        json!([{ "id": "a", "adapter": { "kind": "mock", "latencyMs": 0, "seed": "a" } }]),
        50,
        &events,
    );
    rewrite(&ray, dir.path(), &third, Some(1));
    let output = binary()
        .args(["reload", "--config"])
        .arg(dir.path().join("ray.json"))
        .args(["--url", &ray.url("")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["status"], "reloaded");
    assert_eq!(answer["modelsRemoved"], json!(["c"]));
    assert_eq!(answer["notApplied"][0]["field"], "server", "{answer}");
    assert!(
        answer["notApplied"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("restart")
    );
    ray.wait_for(
        "the change left for a restart in the log",
        LIMIT,
        || async {
            ray.log().iter().any(|l| {
                l["message"] == "config change not applied until restart" && l["field"] == "server"
            })
        },
    )
    .await;
    assert_eq!(model_ids(&ray).await, vec!["a"]);
    let (status, _, _) = infer(ray.port, "a").await;
    assert_eq!(status, 200, "still listening where it started");

    // Each applied reload was one `config_reloaded` event.
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect()
    };
    ray.wait_for("two hook events", LIMIT, || async { read().len() == 2 })
        .await;
    let seen = read();
    assert_eq!(seen[0]["type"], "config_reloaded", "{:?}", seen[0]);
    assert_eq!(seen[0]["modelsAdded"], json!(["c"]), "{:?}", seen[0]);
    assert_eq!(seen[0]["modelsRemoved"], json!(["slow"]), "{:?}", seen[0]);
    assert_eq!(seen[1]["notApplied"][0]["field"], "server", "{:?}", seen[1]);
    let (code, _) = ray.terminate();
    assert_eq!(code, Some(0));
}

async fn reload_status(server: &util::TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(server.url("/v1/admin/reload"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_route_needs_a_key_or_a_local_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    let write = |auth: bool| {
        let config = json!({
            "profile": "tiny",
            "server": { "port": 0 },
            "auth": { "enabled": auth, "apiKeyEnv": "RAY_TEST_RELOAD_KEYS" },
        });
        std::fs::write(&path, config.to_string()).unwrap();
    };
    let source = {
        let path = path.clone();
        ReloadSource::new(move || ConfigLoader::new().with_file(&path).load())
    };

    // Auth on: the key is needed, and with it the reload applies.
    write(true);
    let runtime =
        Runtime::new(ConfigLoader::new().with_file(&path).load().unwrap().config).unwrap();
    let app = App::with_keys(runtime, Some("secret-key-1"))
        .unwrap()
        .with_reload_source(source.clone());
    let server = util::TestServer::start_app(app).await;
    let (status, body) = reload_status(&server, &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = reload_status(&server, &[("authorization", "Bearer secret-key-1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], false, "{body}");
    server.stop().await;

    // Auth off: a client on this machine may reload; one behind a proxy may not.
    write(false);
    let runtime =
        Runtime::new(ConfigLoader::new().with_file(&path).load().unwrap().config).unwrap();
    let app = App::with_keys(runtime, None)
        .unwrap()
        .with_reload_source(source);
    let server = util::TestServer::start_app(app).await;
    let (status, body) = reload_status(&server, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{body}"
    );
    // Turning auth on without its keys is refused whole: auth stays off.
    write(true);
    let (status, body) = reload_status(&server, &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RAY_TEST_RELOAD_KEYS"),
        "{body}"
    );
    assert!(!server.app.runtime().config().auth.enabled);
    let (status, _) = reload_status(&server, &[]).await;
    assert_eq!(status, 400, "still refused, still open to a local client");
    server.stop().await;
}
