//! The JSON log of a real `ray-server` process: one line per request with its fields, warn for
//! refusals and error for failures, slow-request warnings, `telemetry.logLevel` honoured, and
//! API keys never written, whatever the client sends.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "k3y-right-0123456789abcdef";
const WRONG: &str = "k3y-wrong-fedcba9876543210";

/// A running server and the thread collecting its stdout.
struct Logged {
    child: Child,
    base: String,
    lines: std::thread::JoinHandle<Vec<String>>,
}

/// A port nobody listens on now (with `logLevel: warn` the server does not log its port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path, log_level: &str) -> Logged {
    let config = dir.join(format!("ray-{log_level}.json"));
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},
                "model":{{"adapter":{{"kind":"mock","latencyMs":30}}}},
                "auth":{{"enabled":true}},
                "telemetry":{{"logLevel":"{log_level}","slowRequestThresholdMs":10}}}}"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config)
        .env_remove("RAY_PROFILE")
        .env_remove("RAY_LOG_LEVEL")
        .env("RAY_API_KEYS", format!("{KEY},another-key-000000000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Logged { child, base, lines }
}

impl Logged {
    /// Stops the server with SIGTERM and returns every line it wrote (stdout, then stderr).
    fn stop(mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(self.child.wait().unwrap().success());
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let mut lines = self.lines.join().unwrap();
        lines.extend(stderr.lines().map(str::to_string));
        lines
            .iter()
            .map(|line| {
                assert!(!line.contains(KEY), "a key in the log: {line}");
                assert!(!line.contains(WRONG), "a presented key in the log: {line}");
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

async fn traffic(base: &str) {
    let http = reqwest::Client::new();
    let infer = format!("{base}/v1/infer");
    let post = |key: &'static str, body: serde_json::Value| {
        http.post(&infer).bearer_auth(key).json(&body).send()
    };
    let same = serde_json::json!({"input": "log me", "maxTokens": 8});
    for (key, body, status) in [
        (KEY, same.clone(), 200),
        (KEY, same, 200),
        (WRONG, serde_json::json!({"input": "x"}), 401),
        (
            KEY,
            serde_json::json!({"input": "x", "maxTokens": "many"}),
            400,
        ),
    ] {
        assert_eq!(post(key, body).await.unwrap().status(), status);
    }
    // The key in a place it does not belong: a header, the URL, the body.
    let odd = http
        .get(format!("{base}/v1/config?key={WRONG}"))
        .bearer_auth(KEY)
        .header("x-api-key", WRONG)
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 200);
    let config = odd.text().await.unwrap();
    assert!(!config.contains(KEY), "/v1/config shows a key: {config}");
}

fn find(
    lines: &[serde_json::Value],
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| pred(l)).collect()
}

#[tokio::test]
async fn each_request_gets_one_line_with_its_fields_and_no_key_is_ever_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "info");
    traffic(&server.base).await;
    let lines = server.stop();

    let requests = find(&lines, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("request "))
    });
    assert_eq!(requests.len(), 5, "one line per request: {requests:#?}");
    let completed = find(&lines, |l| {
        l["message"] == "request completed" && l["route"] == "/v1/infer"
    });
    assert_eq!(completed.len(), 2, "{completed:#?}");
    for line in &completed {
        assert_eq!(line["level"], "info", "{line}");
        assert_eq!(line["status"], 200);
        assert!(line["latency_ms"].is_number(), "{line}");
        assert!(line["request_id"].is_string(), "{line}");
        assert!(line["queue_time_ms"].is_number(), "{line}");
        assert_eq!(line["deduplicated"], false, "{line}");
        // This machine's own pressure may degrade a request: present either way.
        assert!(line["degraded"].is_boolean(), "{line}");
    }
    assert_eq!(completed[0]["cached"], false);
    assert_eq!(completed[1]["cached"], true);
    let rejected = find(&lines, |l| l["message"] == "request rejected");
    let codes: Vec<_> = rejected
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["unauthorized", "invalid_request"], "{rejected:#?}");
    for line in &rejected {
        assert_eq!(line["level"], "warn", "{line}");
        assert!(line["status"].as_u64().unwrap() >= 400);
        assert!(line["error"].is_string(), "{line}");
    }
    let slow = find(&lines, |l| l["message"] == "slow inference request");
    assert_eq!(
        slow.len(),
        1,
        "the 30 ms answer is over 10 ms, the cached one is not"
    );
    assert_eq!(slow[0]["level"], "warn");
    assert_eq!(slow[0]["request_id"], completed[0]["request_id"]);
}

#[tokio::test]
async fn log_level_warn_keeps_only_warnings_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "warn");
    traffic(&server.base).await;
    let lines = server.stop();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line["level"] == "warn" || line["level"] == "error",
            "logLevel warn wrote {line}"
        );
    }
    assert_eq!(
        find(&lines, |l| l["message"] == "request rejected").len(),
        2
    );
    assert_eq!(
        find(&lines, |l| l["message"] == "slow inference request").len(),
        1
    );
}
