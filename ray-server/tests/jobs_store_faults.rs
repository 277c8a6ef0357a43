//! The job store failing under a real `ray-server` process: a store on a 2 MiB tmpfs filled
//! while jobs run, a store mounted read-only before start and while running, and damaged
//! records at start. Mounting needs root (the tests run as root); where it is refused the
//! test says SKIPPED with the reason.
#![allow(clippy::unwrap_used)]

mod jobs_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobs_support::{FakeBackend, Receiver};

/// A tmpfs mounted for the length of a test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Remounts read-only (`ro: true`) or read-write; a busy file system is tried again.
    fn remount(&self, ro: bool) {
        let option = if ro { "remount,ro" } else { "remount,rw" };
        for _ in 0..50 {
            let status = Command::new("mount")
                .args(["-o", option])
                .arg(&self.path)
                .status()
                .unwrap();
            if status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mount -o {option} {} failed", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

macro_rules! mount_or_skip {
    ($path:expr) => {
        match Tmpfs::mount($path, "2m") {
            Ok(tmpfs) => tmpfs,
            Err(reason) => {
                eprintln!("SKIPPED: this test needs a tmpfs mount (run as root): {reason}");
                return;
            }
        }
    };
}

struct Gateway {
    log: PathBuf,
    port: u16,
    child: Child,
}

impl Gateway {
    fn spawn(config: &Path, log: &Path, port: u16) -> Gateway {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Gateway {
            log: log.to_path_buf(),
            port,
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `check` holds for it (the gateway writes its log from a thread of its
    /// own, a moment later), or as it is after 10 s.
    async fn wait_log(&self, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if check(&log) || Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_live(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(response) = http.get(self.url("/livez")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway did not come up:\n{}", self.log_text());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, backend: &FakeBackend, storage: &Path) -> PathBuf {
    write_config_with(dir, port, backend, storage, 2_000)
}

/// [`write_config`] with another `callbackTimeoutMs`.
fn write_config_with(
    dir: &Path,
    port: u16,
    backend: &FakeBackend,
    storage: &Path,
    callback_timeout_ms: u64,
) -> PathBuf {
    let config = dir.join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},"model":{model},
                "scheduler":{{"concurrency":2,"maxQueue":64}},
                "cache":{{"enabled":false}},
                "telemetry":{{"logLevel":"warn"}},
                "asyncQueue":{{"enabled":true,"storageDir":{storage:?},"maxJobs":500,
                    "minFreeStorageMiB":1,"maxRecordBytes":16384,"pollIntervalMs":50,
                    "dispatchConcurrency":2,"maxAttempts":3,
                    "callbackTimeoutMs":{callback_timeout_ms},
                    "maxCallbackAttempts":50,"callbackAllowPrivateNetwork":true}}}}"#,
            model = backend.model_config(),
            storage = storage.display().to_string(),
        ),
    )
    .unwrap();
    config
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Posts a job; answers the status, the `Retry-After` header and the body.
async fn submit(
    http: &reqwest::Client,
    gateway: &Gateway,
    prompt: &str,
    callback: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let response = http
        .post(gateway.url("/v1/jobs"))
        .json(&serde_json::json!({"input": prompt, "maxTokens": 8, "callbackUrl": callback}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

/// Lines the job queue wrote about its store (request lines are the access log, not this).
fn store_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| !line.contains("request rejected") && !line.contains("request completed"))
        .filter(|line| line.contains("store") || line.contains("cannot"))
        .collect()
}

/// Waits until every job in `ids` has finished and its callback arrived; then checks that
/// nothing is queued or running and the store is healthy.
async fn wait_all_done(
    http: &reqwest::Client,
    gateway: &Gateway,
    receiver: &Receiver,
    ids: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut open = Vec::new();
        for id in ids {
            let (status, record) = get(http, &gateway.url(&format!("/v1/jobs/{id}"))).await;
            assert_eq!(status, 200, "{record}");
            let done = record["status"] == "succeeded"
                && receiver.of(id).iter().any(|d| d.status == "succeeded");
            if !done {
                open.push(format!("{id}: {}", record["status"]));
            }
        }
        let (_, health) = get(http, &gateway.url("/health")).await;
        let queue = &health["asyncQueue"];
        if open.is_empty() && queue["storeFailing"] == false {
            assert_eq!(queue["running"], 0, "{queue}");
            assert_eq!(queue["queued"], 0, "{queue}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish after the store recovered: {open:?}\n{queue}\n{}",
            gateway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `/health` to show the store failing; answers the `asyncQueue` object.
async fn wait_store_failing(http: &reqwest::Client, gateway: &Gateway) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = get(http, &gateway.url("/health")).await;
        if health["asyncQueue"]["storeFailing"] == true {
            return health["asyncQueue"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "/health never showed the store failing: {}\n{}",
            health["asyncQueue"],
            gateway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fills the file system under `dir` until it refuses a write.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    // Whatever is left in the page cache's last partial block.
    let mut byte = 0;
    while file.write_all(&[0]).is_ok() && byte < 65_536 {
        byte += 1;
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_jobs_with_retry_after_and_every_accepted_job_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let _tmpfs = mount_or_skip!(&storage);
    let backend = FakeBackend::start(Duration::from_millis(150)).await;
    let receiver = Receiver::start(None).await;
    let port = free_port();
    let config = write_config(dir.path(), port, &backend, &storage);
    let gateway = Gateway::spawn(&config, &dir.path().join("gateway.log"), port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    gateway.wait_live(&http).await;

    let mut accepted = Vec::new();
    for i in 0..16 {
        let (status, _, body) =
            submit(&http, &gateway, &format!("disk job {i}"), &receiver.url()).await;
        assert_eq!(status, 202, "{body}");
        accepted.push(body["id"].as_str().unwrap().to_string());
    }
    // Fill the disk while the jobs run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let filler = fill(&storage);
    let fault_began = gateway.log_text().lines().count();
    let queue = wait_store_failing(&http, &gateway).await;
    assert_eq!(queue["degraded"], true, "{queue}");
    assert_eq!(queue["storeErrorKind"], "space", "{queue}");
    assert!(
        queue["storeError"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{queue}"
    );
    let (status, ready) = get(&http, &gateway.url("/readyz")).await;
    assert_eq!(
        status, 200,
        "a full job store does not stop inference: {ready}"
    );
    assert!(
        ready["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "async_queue_pressure"),
        "{ready}"
    );
    // Submissions meanwhile: 503 with Retry-After, never a 500.
    for i in 0..5 {
        let (status, retry_after, body) = submit(
            &http,
            &gateway,
            &format!("refused job {i}"),
            &receiver.url(),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "async_queue_storage_low", "{body}");
        assert!(retry_after.is_some(), "{body}");
    }
    // Interactive inference still works.
    let response = http
        .post(gateway.url("/v1/infer"))
        .json(&serde_json::json!({"input": "still serving", "maxTokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Long enough for the summary lines to come due.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, health) = get(&http, &gateway.url("/health")).await;
    assert_eq!(health["asyncQueue"]["storeFailing"], true);

    std::fs::remove_file(filler).unwrap();
    wait_all_done(&http, &gateway, &receiver, &accepted).await;
    let (status, _, body) = submit(&http, &gateway, "after recovery", &receiver.url()).await;
    assert_eq!(status, 202, "{body}");

    let log = gateway
        .wait_log(|log| log.contains("the job store accepts writes again"))
        .await;
    let during: Vec<&str> = log.lines().skip(fault_began).collect();
    let lines = store_lines(&during.join("\n")).len();
    eprintln!("store log lines during the fault and recovery: {lines}");
    assert!(
        lines <= 30,
        "{lines} store log lines for one fault:\n{}",
        during.join("\n")
    );
    assert!(log.contains("the job store refuses writes"), "{log}");
    assert!(log.contains("the job store still refuses writes"), "{log}");
    assert!(log.contains("the job store accepts writes again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_read_only_refuses_the_start_or_pauses_the_queue_until_writable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let tmpfs = mount_or_skip!(&storage);
    std::fs::create_dir_all(storage.join("jobs")).unwrap();
    let backend = FakeBackend::start(Duration::from_millis(100)).await;
    let receiver = Receiver::start(None).await;
    let port = free_port();
    let config = write_config(dir.path(), port, &backend, &storage);

    // Read-only before start: the gateway refuses to start and names the directory.
    tmpfs.remount(true);
    let mut refused = Gateway::spawn(&config, &dir.path().join("refused.log"), port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway started on a read-only store"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = refused.wait_log(|log| log.contains("Read-only")).await;
    let jobs_dir = storage.join("jobs").display().to_string();
    assert!(log.contains(&jobs_dir), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    drop(refused);

    // Writable at start, read-only while running, writable again.
    tmpfs.remount(false);
    let gateway = Gateway::spawn(&config, &dir.path().join("gateway.log"), port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    gateway.wait_live(&http).await;
    let mut accepted = Vec::new();
    for i in 0..8 {
        let (status, _, body) =
            submit(&http, &gateway, &format!("ro job {i}"), &receiver.url()).await;
        assert_eq!(status, 202, "{body}");
        accepted.push(body["id"].as_str().unwrap().to_string());
    }
    tmpfs.remount(true);
    // A submission finds out first, or a job does.
    let (status, retry_after, body) = submit(&http, &gateway, "refused", &receiver.url()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "async_queue_unavailable", "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"), "{body}");
    assert!(
        body["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{body}"
    );
    let queue = wait_store_failing(&http, &gateway).await;
    assert_eq!(queue["storeErrorKind"], "permission", "{queue}");
    assert_eq!(queue["degraded"], true, "{queue}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, queue) = get(&http, &gateway.url("/health")).await;
    assert_eq!(
        queue["asyncQueue"]["running"], 0,
        "nothing runs while writes fail"
    );

    tmpfs.remount(false);
    wait_all_done(&http, &gateway, &receiver, &accepted).await;
    let (status, _, body) = submit(&http, &gateway, "writable again", &receiver.url()).await;
    assert_eq!(status, 202, "{body}");
    let log = gateway
        .wait_log(|log| log.contains("the job store accepts writes again"))
        .await;
    assert!(log.contains("the job store refuses writes"), "{log}");
    let lines = store_lines(&log).len();
    eprintln!("store log lines for the read-only fault: {lines}");
    assert!(lines <= 30, "{lines} store log lines:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_at_start_are_quarantined_listed_and_answered_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let jobs = storage.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let good = serde_json::json!({
        "id": "job_aaaaaaaaaaaaaaaa", "status": "queued",
        "request": {"input": "good record", "maxTokens": 8},
        "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z",
        "attempts": 0, "maxAttempts": 3
    })
    .to_string();
    std::fs::write(jobs.join("job_aaaaaaaaaaaaaaaa.json"), &good).unwrap();
    // Truncated, garbage, and unreadable (a directory where a record should be).
    std::fs::write(
        jobs.join("job_bbbbbbbbbbbbbbbb.json"),
        &good.replace("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb")[..40],
    )
    .unwrap();
    std::fs::write(
        jobs.join("job_cccccccccccccccc.json"),
        b"\x00\xffnot json at all",
    )
    .unwrap();
    std::fs::create_dir(jobs.join("job_dddddddddddddddd.json")).unwrap();

    let backend = FakeBackend::start(Duration::from_millis(10)).await;
    let port = free_port();
    let config = write_config(dir.path(), port, &backend, &storage);
    let gateway = Gateway::spawn(&config, &dir.path().join("gateway.log"), port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    gateway.wait_live(&http).await;

    let mut quarantined: Vec<String> = std::fs::read_dir(storage.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    quarantined.sort();
    assert_eq!(quarantined.len(), 3, "{quarantined:?}");
    for (name, id) in quarantined.iter().zip(["bbbb", "cccc", "dddd"]) {
        assert!(name.starts_with(&format!("job_{}", id.repeat(4))), "{name}");
    }
    // The store's probe writes and removes a `.tmp-` file every second: not a record.
    let remaining: Vec<String> = std::fs::read_dir(&jobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".tmp-"))
        .collect();
    assert_eq!(
        remaining.len(),
        1,
        "only the good record stays in jobs/: {remaining:?}"
    );
    let log = gateway
        .wait_log(|log| {
            log.matches("job store entry damaged; moved to quarantine")
                .count()
                >= 3
        })
        .await;
    assert_eq!(
        log.matches("job store entry damaged; moved to quarantine")
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("could not be moved"), "{log}");

    for id in [
        "job_bbbbbbbbbbbbbbbb",
        "job_cccccccccccccccc",
        "job_dddddddddddddddd",
    ] {
        let (status, body) = get(&http, &gateway.url(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(status, 410, "{body}");
        assert_eq!(body["error"]["code"], "job_record_damaged", "{body}");
    }
    let (status, body) = get(&http, &gateway.url("/v1/jobs/job_eeeeeeeeeeeeeeee")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&http, &gateway.url("/v1/jobs/job_aaaaaaaaaaaaaaaa")).await;
    assert_eq!(status, 200, "{body}");

    // Still known as damaged after a restart (from the names in quarantine/).
    drop(gateway);
    let gateway = Gateway::spawn(&config, &dir.path().join("gateway2.log"), port);
    gateway.wait_live(&http).await;
    let (status, body) = get(&http, &gateway.url("/v1/jobs/job_cccccccccccccccc")).await;
    assert_eq!(status, 410, "{body}");

    // doctor lists them.
    let output = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .args(["doctor", "--json", "--min-free-mib", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "job_records_quarantined")
        .unwrap_or_else(|| panic!("{report}"));
    let message = finding["message"].as_str().unwrap();
    assert!(message.starts_with("3 job store entries"), "{message}");
    assert!(message.contains("job_cccccccccccccccc.json."), "{message}");
}

/// A callback the receiver took while the store turned read-only: its outcome could not be
/// written, and it is written once the store takes writes again, without a second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_outcome_the_store_refused_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let tmpfs = mount_or_skip!(&storage);
    std::fs::create_dir_all(storage.join("jobs")).unwrap();
    let backend = FakeBackend::start(Duration::from_millis(1)).await;
    // Holds each delivery of a `callback-hold` job for 3 s before answering 200.
    let receiver = Receiver::start(None).await;
    let port = free_port();
    let config = write_config_with(dir.path(), port, &backend, &storage, 10_000);
    let gateway = Gateway::spawn(&config, &dir.path().join("gateway.log"), port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    gateway.wait_live(&http).await;
    let (status, _, body) = submit(&http, &gateway, "callback-hold once", &receiver.url()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.of(&id).is_empty() {
        assert!(Instant::now() < deadline, "the delivery never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The delivery is recorded and in flight; the receiver answers while writes fail.
    tmpfs.remount(true);
    wait_store_failing(&http, &gateway).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    tmpfs.remount(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        let (_, record) = get(&http, &gateway.url(&format!("/v1/jobs/{id}"))).await;
        if record["callback"]["status"] != "pending" {
            break record;
        }
        assert!(Instant::now() < deadline, "still pending: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["callback"]["status"], "delivered", "{record}");
    assert_eq!(record["callback"]["attempts"], 1, "{record}");
    let attempts: Vec<u32> = receiver
        .of(&id)
        .iter()
        .map(|d| d.delivery_attempt)
        .collect();
    assert_eq!(attempts, [1], "sent once: {record}");
}
