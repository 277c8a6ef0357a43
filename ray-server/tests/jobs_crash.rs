//! The crash test: 500 jobs go to a real `ray-server` process that is killed with SIGKILL at
//! random moments and restarted each time. In the end every job that got a `202` has finished
//! (succeeded, or failed with a reason), none ran more often than `maxAttempts` (counted by the
//! backend itself), and every callback reached a real receiver on loopback, signed.
#![allow(clippy::unwrap_used)]

mod jobs_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jobs_support::{FakeBackend, Receiver};
use parking_lot::Mutex;

const JOBS: usize = 500;
const KILLS: usize = 8;
const MAX_ATTEMPTS: u32 = 4;
const SECRET: &[u8] = b"crash-test-signing-secret";

/// A small seeded generator, so a failing run can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

struct Gateway {
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gateway {
    /// Starts the gateway on the config written at `config` (listening on `port`), logging
    /// under `dir`, and waits until it answers; with a client for it.
    async fn start(dir: &Path, config: PathBuf, port: u16) -> (Gateway, reqwest::Client) {
        let mut gateway = Gateway {
            config,
            log: dir.join("gateway.log"),
            port,
            child: None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        gateway.spawn();
        wait_live(&http, &gateway.url("/livez")).await;
        (gateway, http)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
            .arg("--config")
            .arg(&self.config)
            .env(
                "RAY_CALLBACK_SIGNING_SECRET",
                std::str::from_utf8(SECRET).unwrap(),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no flush, nothing.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_live(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not come up at {url}");
}

/// A GET answered with JSON; a connection that fails (a keep-alive connection closing just as
/// it is reused) is tried again.
async fn get(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    for _ in 0..5 {
        if let Ok(response) = http.get(url).send().await {
            let status = response.status().as_u16();
            if let Ok(body) = response.json().await {
                return (status, body);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("GET {url} failed five times");
}

fn quarantined(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("quarantine"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_job_survives_repeated_kill_9() {
    let seed = std::env::var("RAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(ray_core::time::unix_millis_now);
    eprintln!("crash test seed {seed} (replay with RAY_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::start(Duration::from_millis(15)).await;
    let receiver = Receiver::start(Some(SECRET)).await;
    let port = free_port();
    let config = dir.path().join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},"model":{model},
                "scheduler":{{"concurrency":4,"maxQueue":64,"affinityLookahead":8}},
                "cache":{{"enabled":false}},
                "telemetry":{{"logLevel":"warn"}},
                "asyncQueue":{{"enabled":true,"storageDir":{storage:?},"maxJobs":2000,
                    "minFreeStorageMiB":1,"pollIntervalMs":50,"dispatchConcurrency":4,
                    "maxAttempts":{MAX_ATTEMPTS},"callbackTimeoutMs":2000,
                    "maxCallbackAttempts":100,"callbackAllowPrivateNetwork":true}}}}"#,
            model = backend.model_config(),
            storage = dir.path().join("store").display().to_string(),
        ),
    )
    .unwrap();
    let (mut gateway, http) = Gateway::start(dir.path(), config, port).await;

    // Submitters: each job's prompt is unique per submission try, so a job the gateway stored
    // but could not acknowledge before dying is told apart from its resubmission.
    let accepted: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let unanswered = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let submit_url = gateway.url("/v1/jobs");
    let callback_url = receiver.url();
    let mut submitters = Vec::new();
    for worker in 0..8u64 {
        let (accepted, unanswered, next, http, url, callback) = (
            accepted.clone(),
            unanswered.clone(),
            next.clone(),
            http.clone(),
            submit_url.clone(),
            callback_url.clone(),
        );
        let mut pace = Rng(seed ^ worker);
        submitters.push(tokio::spawn(async move {
            loop {
                // Spread the submissions over a couple of seconds, so kills land among them.
                tokio::time::sleep(Duration::from_millis(pace.between(0, 50))).await;
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= JOBS {
                    return;
                }
                for attempt in 0.. {
                    let mut prompt = format!("crash job {i} try {attempt}");
                    if i % 10 == 0 {
                        prompt.push_str(" flaky");
                    }
                    if i % 7 == 0 {
                        prompt.push_str(" callback-fail-first");
                    }
                    let body = serde_json::json!({"input": prompt, "maxTokens": 16, "callbackUrl": callback});
                    match http.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == 202 => {
                            let json: serde_json::Value = response.json().await.unwrap();
                            let id = json["id"].as_str().unwrap().to_string();
                            accepted.lock().insert(id, prompt);
                            break;
                        }
                        Ok(response) => {
                            panic!("submission refused: {}", response.text().await.unwrap())
                        }
                        // Killed mid-request (maybe after storing the job): try again.
                        Err(_) => {
                            unanswered.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                }
            }
        }));
    }

    // The killer.
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(100, 700))).await;
        gateway.kill();
        gateway.spawn();
        wait_live(&http, &gateway.url("/livez")).await;
    }
    for submitter in submitters {
        submitter.await.unwrap();
    }
    let accepted = accepted.lock().clone();
    assert_eq!(accepted.len(), JOBS);
    // Connections pooled before the last kill are dead: look with a fresh client.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Let it finish: nothing queued or running, and every accepted job's callback delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = get(
            &http,
            &gateway.url("/v1/jobs?status=queued,running&limit=1"),
        )
        .await;
        let busy = !list["jobs"].as_array().unwrap().is_empty();
        let undelivered = accepted
            .keys()
            .filter(|id| {
                !receiver
                    .of(id)
                    .iter()
                    .any(|d| d.status == "succeeded" || d.status == "failed")
            })
            .count();
        if !busy && undelivered == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done after 60 s: busy {busy}, {undelivered} callbacks missing; log: {}",
            std::fs::read_to_string(&gateway.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut succeeded = 0;
    let mut failed = 0;
    let mut retried = 0;
    for (id, prompt) in &accepted {
        let (status, record) = get(&http, &gateway.url(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(status, 200, "accepted job {id} is missing: {record}");
        let status = record["status"].as_str().unwrap();
        let attempts = record["attempts"].as_u64().unwrap() as u32;
        let calls = backend.log.calls_for(prompt);
        match status {
            "succeeded" => {
                succeeded += 1;
                assert!(calls >= 1, "{id} succeeded without a backend call");
                assert_eq!(
                    record["result"]["output"].as_str().unwrap(),
                    format!("echo: {prompt}")
                );
            }
            "failed" => {
                failed += 1;
                assert!(
                    record["error"]["code"].is_string(),
                    "{id} failed without a reason: {record}"
                );
            }
            other => panic!("{id} ended {other}: {record}"),
        }
        if attempts > 1 {
            retried += 1;
        }
        assert!(attempts <= MAX_ATTEMPTS, "{id}: {attempts} attempts");
        assert!(
            calls <= MAX_ATTEMPTS,
            "{id} ran {calls} times at the backend, more than maxAttempts"
        );
        assert!(
            calls <= attempts,
            "{id}: {calls} backend calls for {attempts} recorded attempts"
        );
        let deliveries = receiver.of(id);
        assert!(!deliveries.is_empty(), "{id}: no callback");
        assert!(
            deliveries.iter().all(|d| d.signature_valid == Some(true)),
            "{id}: bad signature"
        );
        assert!(
            deliveries.iter().any(|d| d.status == status),
            "{id}: callback disagrees"
        );
    }

    // Atomic writes: a kill can leave temporary files, never a half-written record.
    let set_aside = quarantined(&dir.path().join("store"));
    assert!(
        set_aside.iter().all(|name| name.starts_with(".tmp-")),
        "only temporary files were set aside: {set_aside:?}"
    );
    let duplicates: usize = accepted
        .keys()
        .map(|id| receiver.of(id).len().saturating_sub(1))
        .sum();
    eprintln!(
        "crash test: {KILLS} kills, {} submissions cut off, {succeeded} succeeded, {failed} \
         failed, {retried} retried, {} temporary files set aside, {duplicates} extra callback \
         deliveries, {} backend calls",
        unanswered.load(Ordering::SeqCst),
        set_aside.len(),
        backend.log.started.load(Ordering::SeqCst),
    );
    assert_eq!(succeeded + failed, JOBS);

    // And a polite stop still drains and exits cleanly with the queue on.
    let child = gateway.child.take().unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait_with_output().unwrap().status;
    assert!(status.success(), "SIGTERM exit: {status}");
}

/// A callback delivery cut off by SIGKILL counts: each attempt is on disk before it is sent,
/// so after the restart the callback goes out again as the next attempt, not the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_by_kill_9_is_sent_again_as_the_next_attempt() {
    let (attempts, record) = cut_off_delivery(3).await;
    assert_eq!(attempts, [1, 2], "{record}");
    assert_eq!(record["callback"]["status"], "delivered", "{record}");
    assert_eq!(record["callback"]["attempts"], 2, "{record}");
}

/// When the delivery cut off was the last one allowed, the callback fails with that reason
/// after the restart instead of going out once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_delivery_cut_off_by_kill_9_fails_the_callback_saying_why() {
    let (attempts, record) = cut_off_delivery(1).await;
    assert_eq!(attempts, [1], "{record}");
    assert_eq!(record["callback"]["status"], "failed", "{record}");
    assert_eq!(record["callback"]["attempts"], 1, "{record}");
    assert!(
        record["callback"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("cut off") && e.contains("maxCallbackAttempts 1")),
        "{record}"
    );
}

/// Runs one job whose callback receiver holds each delivery for 3 s, kills the gateway with
/// SIGKILL during the first delivery, restarts it, and waits for the callback to settle:
/// the delivery attempts the receiver saw, and the job's record.
async fn cut_off_delivery(max_callback_attempts: u32) -> (Vec<u32>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Some(SECRET)).await;
    let port = free_port();
    let config = dir.path().join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},
                "model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},
                "telemetry":{{"logLevel":"warn"}},
                "asyncQueue":{{"enabled":true,"storageDir":{storage:?},
                    "minFreeStorageMiB":1,"pollIntervalMs":50,"callbackTimeoutMs":10000,
                    "maxCallbackAttempts":{max_callback_attempts},
                    "callbackAllowPrivateNetwork":true}}}}"#,
            storage = dir.path().join("store").display().to_string(),
        ),
    )
    .unwrap();
    let (mut gateway, http) = Gateway::start(dir.path(), config, port).await;
    let submitted = http
        .post(gateway.url("/v1/jobs"))
        .json(&serde_json::json!({
            "input": "callback-slow: cut me off",
            "callbackUrl": receiver.url(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let id = submitted.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.of(&id).is_empty() {
        assert!(Instant::now() < deadline, "the first delivery never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.kill();
    gateway.spawn();
    wait_live(&http, &gateway.url("/livez")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        let (status, record) = get(&http, &gateway.url(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(status, 200, "{record}");
        if record["callback"]["status"] != "pending" {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the callback did not settle after the restart: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries = receiver.of(&id);
    assert!(deliveries.iter().all(|d| d.signature_valid == Some(true)));
    (
        deliveries.iter().map(|d| d.delivery_attempt).collect(),
        record,
    )
}
