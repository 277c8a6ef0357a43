//! The operator CLI, run as the real binary.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ray-server"));
    // The tests must not depend on the developer's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("RAY_") {
            command.env_remove(key);
        }
    }
    command
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn check_config_accepts_every_example() {
    let examples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let output = binary()
        .arg("check-config")
        .args(&examples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": ok (").count(), 22, "{stdout}");
    // Each says what its batch window does and why the default is off.
    assert_eq!(stdout.matches("(batchWindowMs").count(), 22, "{stdout}");
}

#[test]
fn check_config_reports_every_problem_as_file_path_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        &dir,
        "bad.json",
        r#"{"profile":"tiny","scheduler":{"maxQueue":0,"concurency":1},"cache":{"maxBytes":-5}}"#,
    );
    let output = binary().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = bad.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{name}: scheduler.maxQueue: must be at least 1, got 0"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{name}: scheduler.concurency: unknown field; did you mean \"concurrency\"?"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}: cache.maxBytes:")),
        "{stderr}"
    );
}

#[test]
fn check_config_names_the_file_for_broken_json_and_unknown_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(&dir, "broken.json", "{ this is not json");
    let output = binary().arg("check-config").arg(&broken).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&broken.display().to_string()) && stderr.contains("not valid JSON"),
        "{stderr}"
    );

    let unknown = write(&dir, "unknown.json", r#"{"profile":"gigantic"}"#);
    let output = binary().arg("check-config").arg(&unknown).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("profile: unknown profile \"gigantic\""),
        "{stderr}"
    );

    let missing = dir.path().join("missing.json");
    let output = binary().arg("check-config").arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

#[test]
fn check_config_prints_warnings_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let open = write(
        &dir,
        "open.json",
        r#"{"profile":"tiny","server":{"host":"0.0.0.0"}}"#,
    );
    let output = binary().arg("check-config").arg(&open).output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(": warning: auth.enabled: is false while server.host 0.0.0.0"),
        "{stdout}"
    );
}

#[test]
fn check_config_refuses_a_signing_secret_that_would_stop_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write(
        &dir,
        "jobs.json",
        &format!(
            r#"{{"profile":"tiny","asyncQueue":{{"enabled":true,"storageDir":{:?}}}}}"#,
            dir.path().join("jobs")
        ),
    );
    let check = |secret: &str| {
        binary()
            .arg("check-config")
            .arg(&jobs)
            .env("RAY_CALLBACK_SIGNING_SECRET", secret)
            .output()
            .unwrap()
    };
    let short = check("short");
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    let stdout = String::from_utf8_lossy(&short.stdout);
    assert!(
        stdout.contains(
            "asyncQueue.callbackSigningSecretEnv: RAY_CALLBACK_SIGNING_SECRET must hold at least \
             16 bytes, got 5: the gateway will not start"
        ),
        "{stdout}{stderr}"
    );
    // The gateway itself refuses to start with it, as the message says.
    let serve = binary()
        .arg("--config")
        .arg(&jobs)
        .env("RAY_CALLBACK_SIGNING_SECRET", "short")
        .env("RAY_PORT", "0")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("must hold at least 16 bytes"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
    // A long one, none at all (unsigned callbacks), and --no-env pass.
    assert!(check("0123456789abcdef").status.success());
    assert!(check("").status.success());
    let no_env = binary()
        .args(["check-config", "--no-env"])
        .arg(&jobs)
        .env("RAY_CALLBACK_SIGNING_SECRET", "short")
        .output()
        .unwrap();
    assert!(no_env.status.success());
    // Without the queue (or a URL hook) the secret is never read.
    let plain = write(&dir, "plain.json", r#"{"profile":"tiny"}"#);
    let output = binary()
        .arg("check-config")
        .arg(&plain)
        .env("RAY_CALLBACK_SIGNING_SECRET", "short")
        .output()
        .unwrap();
    assert!(output.status.success());
}

#[test]
fn schema_prints_the_committed_schema() {
    let output = binary().arg("schema").output().unwrap();
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/ray-config.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
}

#[test]
fn print_config_layers_env_and_redacts_headers() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "vps.json",
        r#"{"profile":"vps","model":{"adapter":{"kind":"openai-compatible","headers":{"X-Token":"s3cret"}}}}"#,
    );
    let output = binary()
        .arg("print-config")
        .arg("--config")
        .arg(&file)
        .env("RAY_SCHEDULER_MAX_QUEUE", "33")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("s3cret"));
    let config: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        config["model"]["adapter"]["headers"]["X-Token"],
        "[redacted]"
    );
    assert_eq!(config["scheduler"]["maxQueue"], 33);
}

#[test]
fn print_config_explain_mentions_every_section_and_where_values_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "vps.json",
        r#"{"profile":"vps","scheduler":{"maxQueue":40},
            "model":{"adapter":{"kind":"openai-compatible","headers":{"X-Token":"s3cret"}}}}"#,
    );
    let run = |extra: &[&str]| {
        let output = binary()
            .arg("print-config")
            .arg("--config")
            .arg(&file)
            .args(extra)
            .env("RAY_SCHEDULER_CONCURRENCY", "3")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let text = run(&["--explain"]);
    assert!(!text.contains("s3cret"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    for section in json.as_object().unwrap().keys() {
        if section != "profile" {
            assert!(
                text.contains(&format!("\n{section}\n")),
                "no {section}:\n{text}"
            );
        }
    }
    assert!(text.contains("Profile vps (chosen by the file)"), "{text}");
    assert!(
        text.contains("Up to 3 requests run at once; up to 40 wait"),
        "{text}"
    );
    assert!(
        text.contains("concurrency = 3 (env RAY_SCHEDULER_CONCURRENCY)"),
        "{text}"
    );
    assert!(text.contains("maxQueue = 40 (file)"), "{text}");
    assert!(text.contains("(profile vps)"), "{text}");
    // Not a terminal and no flag: JSON, as scripts expect.
    let piped: serde_json::Value = serde_json::from_str(&run(&[])).unwrap();
    assert_eq!(piped["scheduler"]["concurrency"], 3);
}

#[test]
fn print_config_and_check_config_say_where_requests_go_in_plain_words() {
    let config = repo_root().join("examples/config/ray.4gb.three-models.json");
    let output = binary()
        .args(["print-config", "--explain", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for sentence in [
        "3 models: qwen2.5-1.5b-instruct-q4_k_m (drafter, llama.cpp backend, also called drafter)",
        "Requests with task classify or label (rule classify) go to qwen2.5-0.5b-instruct-q4_k_m.",
        "The rest go to qwen2.5-1.5b-instruct-q4_k_m.",
        "If qwen2.5-1.5b-instruct-q4_k_m is down, its requests fall back to \
         qwen2.5-0.5b-instruct-q4_k_m",
        "/v1/embeddings is served by bge-small-en-v1.5-q8_0",
    ] {
        assert!(text.contains(sentence), "missing {sentence:?} in:\n{text}");
    }
    let output = binary().arg("check-config").arg(&config).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("The rest go to qwen2.5-1.5b-instruct-q4_k_m."),
        "{text}"
    );
}

#[test]
fn no_variable_the_cli_reads_is_called_a_misspelled_setting() {
    use clap::CommandFactory;
    fn variables(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                out.push(name.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            variables(sub, out);
        }
    }
    let mut names = Vec::new();
    variables(&ray_server::cli::Cli::command(), &mut names);
    assert!(names.iter().any(|n| n == "RAY_MODEL_SHA256"), "{names:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "ray.json", r#"{"profile":"tiny"}"#);
    let mut command = binary();
    command.arg("check-config").arg(&config);
    for name in &names {
        command.env(name, "1");
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(": ok (profile tiny"), "{stdout}");
    assert!(!stdout.contains("is not a Ray setting"), "{stdout}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check-config", "--help"],
        vec!["schema", "--help"],
        vec!["print-config", "--help"],
    ] {
        let output = binary().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn a_bad_config_fails_boot_with_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        &dir,
        "bad.json",
        r#"{"profile":"tiny","scheduler":{"concurrency":0}}"#,
    );
    let output = binary().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(line["message"], "gateway boot failed");
    assert_eq!(line["level"], "error");
    assert_eq!(line["error"]["code"], "config_validation_error");
    assert_eq!(
        line["error"]["details"]["problems"][0],
        "scheduler.concurrency: must be at least 1, got 0"
    );
}

/// One request over a plain blocking socket (no external tools, so the test cannot skip):
/// returns the status and the body.
fn http(port: u64, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn get(port: u64, path: &str) -> (u16, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn serves_then_drains_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // A slow mock, so a request is still running when SIGTERM arrives.
    let config = write(
        &dir,
        "ray.json",
        r#"{"profile":"tiny","server":{"port":0},"cache":{"enabled":false},
            "scheduler":{"concurrency":1},
            "model":{"adapter":{"kind":"mock","latencyMs":1500}}}"#,
    );
    let mut child = binary()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let port = loop {
        let line = lines.next().expect("a log line").unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if json["message"] == "gateway listening" {
            break json["port"].as_u64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    };
    let (status, body) = get(port, "/livez");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let post = move |input: &str| {
        let body = format!(r#"{{"input":"{input}"}}"#);
        let answer = http(
            port,
            &format!(
                "POST /v1/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        (answer, Instant::now())
    };
    let in_flight = std::thread::spawn(move || post("finish me before you go"));
    // Wait until the request is running in the backend, then queue two more behind it (one
    // permit), before signalling.
    let waiting = Instant::now();
    let mut queued = Vec::new();
    loop {
        let (_, health) = get(port, "/health");
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        if health["inFlight"].as_u64() == Some(1) && queued.is_empty() {
            queued = ["one", "two"]
                .into_iter()
                .map(|input| std::thread::spawn(move || post(input)))
                .collect();
        }
        if health["queueDepth"].as_u64() == Some(2) {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the request never started: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The queued requests are answered at once, 503 shutting_down with Retry-After, before
    // the one in progress ends; that one completes.
    let ((status, body), finished) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the request in progress completes: {body}");
    assert!(body.contains("finish me before you go"), "{body}");
    for queued in queued {
        let ((status, body), refused) = queued.join().unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"code\":\"shutting_down\""), "{body}");
        assert!(
            refused < finished,
            "a queued request waited for the drain: {body}"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("gateway shutting down")),
        "{rest:?}"
    );
    // Stopped listening: new connections are refused.
    assert!(TcpStream::connect(("127.0.0.1", port as u16)).is_err());
}

#[test]
fn check_config_refuses_a_managed_model_that_cannot_fit_the_lifecycle_budget() {
    use ray_server::ops::gguf::GgufBuilder;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.gguf");
    GgufBuilder::llama(24, 896, 14, 2)
        .tensor("w", 1024)
        .write(&small)
        .unwrap();
    // 16 Mi f32 elements: a 64 MiB file, more than the whole 64 MiB budget.
    let large = dir.path().join("large.gguf");
    GgufBuilder::llama(24, 896, 14, 2)
        .tensor("w", 16 << 20)
        .write(&large)
        .unwrap();
    let model = |id: &str, path: &Path, port: u16| {
        serde_json::json!({
            "id": id,
            "adapter": {
                "kind": "llama.cpp",
                "baseUrl": format!("http://127.0.0.1:{port}"),
                // A whole launch profile: an entry of `models` takes nothing from the profile.
                "launchProfile": {
                    "preset": "single-vps-sub1b-cx23",
                    "binaryPath": "/usr/local/bin/llama-server",
                    "modelPath": path.display().to_string(),
                    "host": "127.0.0.1",
                    "port": port,
                    "alias": id,
                    "ctxSize": 512,
                    "parallel": 2,
                    "threads": 2,
                    "threadsHttp": 2,
                    "batchSize": 256,
                    "ubatchSize": 128,
                    "cachePrompt": true,
                    "cacheReuse": 256,
                    "cacheRamMiB": 0,
                    "continuousBatching": true,
                    "enableMetrics": true,
                    "exposeSlots": true,
                    "warmup": true,
                    "enableUnifiedKv": true,
                    "cacheIdleSlots": true,
                    "contextShift": true,
                    "supervise": true
                }
            }
        })
    };
    let config = serde_json::json!({
        "profile": "sub1b",
        "models": [model("small", &small, 18101), model("large", &large, 18102)],
        "lifecycle": { "memoryBudgetMiB": 64, "stateDir": dir.path().join("state").display().to_string() }
    });
    let path = write(&dir, "ray.json", &config.to_string());
    let output = binary().arg("check-config").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].contains("models[1]: model_does_not_fit: the model \"large\" needs about")
            && errors[0].contains("but the memory budget is 64 MiB (lifecycle.memoryBudgetMiB)"),
        "{stdout}"
    );
    // The same as JSON: the budget, each model's footprint, the error on its entry.
    let output = binary()
        .args(["check-config", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let file = &report["files"][0];
    assert_eq!(file["memory"]["budgetMiB"], 64);
    assert_eq!(file["memory"]["budgetSource"], "lifecycle.memoryBudgetMiB");
    let models = file["memory"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["id"], "large");
    assert!(models[1]["footprintMiB"].as_u64().unwrap() > 64, "{file}");
    let error = file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .unwrap();
    assert_eq!(error["path"], "models[1]");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("model_does_not_fit:"),
        "{error}"
    );

    // With room for it, the same config passes.
    let mut roomy = config.clone();
    roomy["lifecycle"]["memoryBudgetMiB"] = serde_json::json!(1024);
    let path = write(&dir, "roomy.json", &roomy.to_string());
    let output = binary().arg("check-config").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    // One line gives the budget and each model's footprint.
    let line = stdout
        .lines()
        .find(|l| l.contains("memory budget 1024 MiB (lifecycle.memoryBudgetMiB): small "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(" MiB (estimated), large ") && line.ends_with("within the budget"),
        "{line}"
    );
}

#[test]
fn check_config_json_names_every_field_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        &dir,
        "open.json",
        r#"{"profile":"tiny","server":{"host":"0.0.0.0"}}"#,
    );
    let bad = write(
        &dir,
        "bad.json",
        r#"{"profile":"tiny","scheduler":{"maxQueue":0}}"#,
    );
    let broken = write(&dir, "broken.json", "{ nope");
    let output = binary()
        .args(["check-config", "--json"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kind"], "ray-check-config");
    assert_eq!(report["ok"], true);
    assert_eq!(report["errors"], 0);
    let file = &report["files"][0];
    assert_eq!(file["file"], good.display().to_string());
    assert_eq!(
        (file["ok"].clone(), file["profile"].clone()),
        (true.into(), "tiny".into())
    );
    assert_eq!(file["adapter"], "mock");
    assert!(file["defaultModel"].is_string(), "{file}");
    assert!(file["memory"].is_null(), "{file}");
    let warning = file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "auth.enabled")
        .unwrap();
    assert_eq!(warning["severity"], "warning");

    let output = binary()
        .args(["check-config", "--json"])
        .arg(&good)
        .arg(&bad)
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"], 2, "{report}");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[1]["ok"], false);
    let error = files[1]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .unwrap();
    assert_eq!(error["path"], "scheduler.maxQueue");
    assert!(
        error["message"].as_str().unwrap().contains("at least 1"),
        "{error}"
    );
    assert!(files[1]["profile"].is_null());
    assert_eq!(files[2]["diagnostics"][0]["path"], "");
    assert!(
        files[2]["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{report}"
    );
}

#[test]
fn check_config_and_print_config_say_where_the_host_policy_cut_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.json", r#"{"maxMemoryMiB":1024}"#);
    let config = |name: &str, lifecycle: serde_json::Value| {
        let mut lifecycle = lifecycle;
        lifecycle["stateDir"] = dir.path().join("state").display().to_string().into();
        let config = serde_json::json!({
            "profile": "tiny",
            "model": {"adapter": {"kind": "mock"}},
            "lifecycle": lifecycle,
        });
        write(&dir, name, &config.to_string())
    };
    let with_policy = |args: &[&str], file: &Path| {
        binary()
            .args(args)
            .arg(file)
            .env("RAY_POLICY_FILE", &policy)
            .output()
            .unwrap()
    };
    let source = format!("(set by policy {})", policy.display());

    // A budget the config asks for: cut by the loader to 1024 less the 768 MiB reserve.
    let asked = config("asked.json", serde_json::json!({"memoryBudgetMiB": 8192}));
    let output = with_policy(&["check-config"], &asked);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("warning: lifecycle.memoryBudgetMiB: cut from 8192 to 256"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.ends_with(&source), "{line}");
    let output = with_policy(&["check-config", "--json"], &asked);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let memory = &report["files"][0]["memory"];
    assert_eq!(memory["budgetMiB"], 256, "{memory}");
    assert_eq!(memory["budgetSource"], "lifecycle.memoryBudgetMiB");
    assert!(memory["policyCut"].is_null(), "{memory}");
    let output = with_policy(&["print-config", "--json", "--config"], &asked);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: lifecycle.memoryBudgetMiB: cut from 8192 to 256"),
        "{stderr}"
    );
    let effective: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(effective["lifecycle"]["memoryBudgetMiB"], 256);

    // The default budget (the cgroup limit or the machine's memory, less the reserve): cut to
    // the same 256 MiB where it is computed, with the figure it had before.
    let default = config("default.json", serde_json::json!({}));
    let output = with_policy(&["check-config", "--json"], &default);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let file = &report["files"][0];
    let memory = &file["memory"];
    assert_eq!(memory["budgetMiB"], 256, "{memory}");
    assert_eq!(
        memory["budgetSource"],
        "the host policy's maxMemoryMiB less lifecycle.reserveMiB"
    );
    let before = memory["policyCut"]["fromMiB"].as_u64().unwrap();
    assert!(before > 256, "{memory}");
    let warning = file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "lifecycle.memoryBudgetMiB")
        .unwrap_or_else(|| panic!("{file}"));
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["source"], "policy maxMemoryMiB");
    let expected = format!(
        "the default budget is cut from {before} MiB ({}) to 256 MiB",
        memory["policyCut"]["fromSource"].as_str().unwrap()
    );
    assert!(
        warning["message"].as_str().unwrap().starts_with(&expected),
        "{warning}"
    );
    let output = with_policy(&["check-config"], &default);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&expected),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = with_policy(&["print-config", "--json", "--config"], &default);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&expected), "{stderr}");

    // Without the policy nothing is cut.
    let output = binary()
        .args(["check-config", "--json"])
        .arg(&default)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let memory = &report["files"][0]["memory"];
    assert!(memory["policyCut"].is_null(), "{memory}");
    assert_eq!(memory["budgetMiB"], before, "{memory}");
}

#[test]
fn check_config_refuses_a_model_outside_the_host_policy_folders_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let policy = write(
        &dir,
        "policy.json",
        &serde_json::json!({ "modelDirs": [models.display().to_string()] }).to_string(),
    );
    let config = |name: &str, model_path: &str| {
        let config = serde_json::json!({
            "profile": "sub1b",
            "model": {"adapter": {"kind": "llama.cpp", "launchProfile": {"modelPath": model_path}}},
        });
        write(&dir, name, &config.to_string())
    };
    let check = |file: &Path, args: &[&str]| {
        binary()
            .arg("check-config")
            .args(args)
            .arg(file)
            .env("RAY_POLICY_FILE", &policy)
            .output()
            .unwrap()
    };
    let outside = config("outside.json", "/home/me/other.gguf");
    let output = check(&outside, &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let refusal = report["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(refusal["path"], "model.adapter.launchProfile.modelPath");
    assert_eq!(
        refusal["source"],
        format!("policy {}", policy.display()).as_str()
    );
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .starts_with("/home/me/other.gguf is outside the folders the host policy allows"),
        "{refusal}"
    );
    // As lines, on stderr with the file and the field.
    let output = check(&outside, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: model.adapter.launchProfile.modelPath: /home/me/other.gguf is outside",
            outside.display()
        )),
        "{stderr}"
    );
    // A path that climbs out of an allowed folder is outside it too; one inside is accepted.
    let climbing = format!("{}/../other.gguf", models.display());
    let output = check(&config("climbing.json", &climbing), &[]);
    assert_eq!(output.status.code(), Some(1), "{climbing}");
    let inside = format!("{}/qwen.gguf", models.display());
    let output = check(&config("inside.json", &inside), &[]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_policy_file_named_by_the_config_is_applied_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let strict = write(&dir, "strict.json", r#"{"maxConcurrency":2}"#);
    let looser = write(&dir, "looser.json", r#"{"maxConcurrency":4}"#);
    let config = |name: &str, policy: &Path| {
        let config = serde_json::json!({
            "profile": "tiny",
            "policyFile": policy.display().to_string(),
            "scheduler": {"concurrency": 6},
            "model": {"adapter": {"kind": "mock"}},
        });
        write(&dir, name, &config.to_string())
    };
    let named = config("named.json", &strict);
    let cut = |report: &serde_json::Value| -> serde_json::Value {
        report["files"][0]["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "scheduler.concurrency")
            .cloned()
            .unwrap_or_else(|| panic!("{report}"))
    };

    // check-config: the cut is a warning naming the field and the config's policy file.
    let output = binary()
        .args(["check-config", "--json"])
        .arg(&named)
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let warning = cut(&report);
    assert_eq!(warning["severity"], "warning");
    assert_eq!(
        warning["source"],
        format!("policy {}", strict.display()).as_str()
    );
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("cut from 6 to 2"),
        "{warning}"
    );

    // RAY_POLICY_FILE names another: the environment's applies.
    let output = binary()
        .args(["check-config", "--json"])
        .arg(&named)
        .env("RAY_POLICY_FILE", &looser)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let warning = cut(&report);
    assert_eq!(
        warning["source"],
        format!("policy {}", looser.display()).as_str()
    );
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("cut from 6 to 4"),
        "{warning}"
    );

    // print-config: the cut on stderr, the clamped value and the file applied in the JSON.
    let output = binary()
        .args(["print-config", "--json", "--config"])
        .arg(&named)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: warning: scheduler.concurrency: cut from 6 to 2",
            named.display()
        )) && stderr.contains(&format!("(set by policy {})", strict.display())),
        "{stderr}"
    );
    let effective: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(effective["scheduler"]["concurrency"], 2);
    assert_eq!(
        effective["policyFile"],
        strict.display().to_string().as_str()
    );
    // --explain names the value as the policy's, not the file's.
    let output = binary()
        .args(["print-config", "--explain", "--config"])
        .arg(&named)
        .output()
        .unwrap();
    let explained = String::from_utf8_lossy(&output.stdout);
    assert!(
        explained.contains(&format!(
            "concurrency = 2 (cut by policy {})",
            strict.display()
        )),
        "{explained}"
    );
    let output = binary()
        .args(["print-config", "--json", "--config"])
        .arg(&named)
        .env("RAY_POLICY_FILE", &looser)
        .output()
        .unwrap();
    let effective: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(effective["scheduler"]["concurrency"], 4);
    assert_eq!(
        effective["policyFile"],
        looser.display().to_string().as_str()
    );

    // A policy file that is not there, or not a policy: an error on policyFile, exit 1.
    let broken = write(&dir, "broken.json", r#"{"maxConcurency":2}"#);
    for (name, policy) in [
        ("missing.json", dir.path().join("absent.json")),
        ("broken-policy.json", broken),
    ] {
        let file = config(name, &policy);
        let output = binary()
            .args(["check-config", "--json"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{name}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let error = report["files"][0]["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["severity"] == "error")
            .cloned()
            .unwrap_or_else(|| panic!("{report}"));
        assert_eq!(error["path"], "policyFile", "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&policy.display().to_string()),
            "{error}"
        );
        let output = binary().arg("check-config").arg(&file).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "{}: policyFile: the host policy file cannot be used: {}",
                file.display(),
                policy.display()
            )),
            "{stderr}"
        );
        // The gateway does not start on it either.
        let output = binary().arg("--config").arg(&file).output().unwrap();
        assert!(!output.status.success(), "{name}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("policyFile"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
