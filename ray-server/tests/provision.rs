//! `ray-server provision MANIFEST`, run as the real binary against temporary roots: the
//! fixture's models provisioned from a clean root, a second run that changes nothing, a wrong
//! SHA-256 that stops with nothing half-written, a download from a local HTTP server that
//! honours `Range` (resumed from a partial `.part`), and a dry run that writes nothing.
#![allow(clippy::unwrap_used)]

mod deploy_tools;
mod fixture;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use parking_lot::Mutex;

use deploy_tools::{binary, skipped};
use ray_server::ops::gguf::GgufBuilder;
use ray_server::ops::stage::sha256_file;
use serde_json::{Value, json};

const MODELS: &str = "/var/lib/ray/models";

fn launch(port: u16, alias: &str) -> Value {
    json!({
        "preset": "single-vps-sub1b-cx23",
        "binaryPath": "/usr/local/bin/llama-server",
        "host": "127.0.0.1",
        "port": port,
        "alias": alias,
        "ctxSize": 512,
        "parallel": 1,
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
    })
}

fn model(id: &str, file: &str, url: Option<String>, sha256: &str, port: u16) -> Value {
    let mut model = json!({
        "id": id,
        "path": format!("{MODELS}/{file}"),
        "sha256": sha256,
        "launchProfile": launch(port, id),
    });
    if let Some(url) = url {
        model["url"] = json!(url);
    }
    model
}

fn manifest(root: &Path, models: Vec<Value>) -> Value {
    json!({
        "profile": "sub1b",
        "config": {
            "lifecycle": { "memoryBudgetMiB": 2048, "stateDir": root.join("state").display().to_string() }
        },
        "models": models,
        "routing": { "rules": [] },
        "target": { "root": root.display().to_string(), "domain": "ray.example.com" }
    })
}

fn write_manifest(dir: &Path, manifest: &Value) -> PathBuf {
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(manifest).unwrap()).unwrap();
    path
}

fn provision(manifest: &Path, args: &[&str]) -> Output {
    binary()
        .arg("provision")
        .arg(manifest)
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json_report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(output)))
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The fixture's tiny and large models, or why they are absent.
fn fixture_models() -> Option<(PathBuf, PathBuf)> {
    let (tiny, large) = (fixture::model("tiny"), fixture::model("large"));
    if tiny.exists() && large.exists() {
        Some((tiny, large))
    } else {
        skipped(
            "provisioning the fixture's models",
            &format!(
                "{} or {} is missing; run tools/llama-fixture/setup.sh",
                tiny.display(),
                large.display()
            ),
        );
        None
    }
}

#[test]
fn a_clean_root_is_provisioned_and_a_second_run_changes_nothing() {
    let Some((tiny, large)) = fixture_models() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let url = |p: &Path| Some(format!("file://{}", p.display()));
    let path = write_manifest(
        dir.path(),
        &manifest(
            &root,
            vec![
                model(
                    "tiny",
                    "ray-tiny.gguf",
                    url(&tiny),
                    &sha256_file(&tiny).unwrap(),
                    18201,
                ),
                model(
                    "large",
                    "ray-large.gguf",
                    url(&large),
                    &sha256_file(&large).unwrap(),
                    18202,
                ),
            ],
        ),
    );
    let output = provision(&path, &[]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    for file in ["ray-tiny.gguf", "ray-large.gguf"] {
        let installed = root.join("var/lib/ray/models").join(file);
        assert_eq!(
            sha256_file(&installed).unwrap(),
            sha256_file(&fixture::model(
                file.trim_start_matches("ray-").trim_end_matches(".gguf")
            ))
            .unwrap()
        );
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("etc/ray/ray.json")).unwrap())
            .unwrap();
    assert_eq!(config["models"][1]["id"], "large");
    assert_eq!(
        config["models"][1]["adapter"]["launchProfile"]["modelPath"],
        "/var/lib/ray/models/ray-large.gguf"
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/ray-gateway.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/ray-server serve --config /etc/ray/ray.json"),
        "{unit}"
    );
    let caddy = std::fs::read_to_string(root.join("etc/caddy/Caddyfile")).unwrap();
    assert!(caddy.contains("ray.example.com {"), "{caddy}");
    let env = root.join("etc/ray/ray.env");
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(out.contains("sudo systemctl daemon-reload"), "{out}");
    assert!(out.contains("sudo systemctl reload caddy"), "{out}");
    assert!(
        !files_below(&root)
            .iter()
            .any(|f| f.ends_with(".part") || f.ends_with(".tmp"))
    );

    // The second run verifies the models again and writes nothing.
    let before: Vec<(String, std::time::SystemTime)> = files_below(&root)
        .into_iter()
        .map(|f| {
            let modified = std::fs::metadata(root.join(&f))
                .unwrap()
                .modified()
                .unwrap();
            (f, modified)
        })
        .collect();
    let output = provision(&path, &["--json"]);
    let report = json_report(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(report["kind"], "ray-provision");
    assert_eq!(report["ok"], true);
    assert_eq!(report["changed"], false);
    assert_eq!(report["next"], json!([]));
    assert_eq!(report["memory"]["budgetMiB"], 2048);
    assert_eq!(report["memory"]["models"].as_array().unwrap().len(), 2);
    let statuses: Vec<(String, String)> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("model".into(), "unchanged".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("env_file".into(), "kept".into())),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|(_, status)| status == "unchanged" || status == "kept"),
        "{statuses:?}"
    );
    let after: Vec<(String, std::time::SystemTime)> = files_below(&root)
        .into_iter()
        .map(|f| {
            let modified = std::fs::metadata(root.join(&f))
                .unwrap()
                .modified()
                .unwrap();
            (f, modified)
        })
        .collect();
    assert_eq!(before, after);
    let output = provision(&path, &[]);
    assert!(
        text(&output).contains("nothing changed"),
        "{}",
        text(&output)
    );
}

fn small_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    GgufBuilder::llama(24, 896, 14, 2)
        .tensor("token_embd.weight", 300_000)
        .write(&path)
        .unwrap();
    path
}

#[test]
fn a_wrong_sha256_stops_with_both_digests_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let source = small_model(dir.path(), "m.gguf");
    let right = sha256_file(&source).unwrap();
    let wrong = "0".repeat(64);
    let url = Some(format!("file://{}", source.display()));
    // Fetched, then refused: no model, no .part, no config, no units.
    let path = write_manifest(
        dir.path(),
        &manifest(
            &root,
            vec![model("m", "m.gguf", url.clone(), &wrong, 18211)],
        ),
    );
    let output = provision(&path, &[]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("models[0].sha256: sha256_mismatch: model \"m\"")
            && out.contains(&right)
            && out.contains(&wrong),
        "{out}"
    );
    assert_eq!(files_below(&root), Vec::<String>::new());

    // An installed file with another digest: refused, left as it is, nothing else written.
    std::fs::create_dir_all(root.join("var/lib/ray/models")).unwrap();
    std::fs::copy(&source, root.join("var/lib/ray/models/m.gguf")).unwrap();
    let output = provision(&path, &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["field"], "models[0].sha256");
    assert_eq!(report["error"]["code"], "sha256_mismatch");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&right) && message.contains(&wrong),
        "{message}"
    );
    assert_eq!(files_below(&root), ["var/lib/ray/models/m.gguf"]);

    // A manifest error names its field, as JSON too.
    let mut bad = manifest(&root, vec![model("m", "m.gguf", url, &right, 18211)]);
    bad["models"][0]["sha"] = json!("x");
    let output = provision(&write_manifest(dir.path(), &bad), &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(report["error"]["field"], "models[0].sha");
    assert_eq!(report["error"]["code"], "manifest_invalid");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `sha`"),
        "{report}"
    );
}

/// A one-file HTTP server on loopback that honours `Range: bytes=N-`; it records each
/// request's Range header.
struct FileServer {
    url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl FileServer {
    fn start(body: Vec<u8>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/model.gguf", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("range")
                    {
                        range = Some(value.trim().to_string());
                    }
                }
                seen.lock().push(range.clone());
                let start = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|r| r.parse::<usize>().ok());
                let head = match start {
                    Some(start) if start >= body.len() => {
                        let _ = stream.write_all(
                            format!(
                                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        continue;
                    }
                    Some(start) => format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len() - 1,
                        body.len(),
                        body.len() - start
                    ),
                    None => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                };
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[start.unwrap_or(0)..]);
                let _ = stream.flush();
                // Drain whatever the client still sends before closing.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            }
        });
        FileServer { url, ranges }
    }
}

#[test]
fn a_download_resumes_from_its_part_file_and_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let source = small_model(dir.path(), "m.gguf");
    let body = std::fs::read(&source).unwrap();
    let sha = sha256_file(&source).unwrap();
    let server = FileServer::start(body.clone());
    let mut m = manifest(
        &root,
        vec![model("m", "m.gguf", Some(server.url.clone()), &sha, 18221)],
    );
    // No lifecycle here: the models must fit what render gives llama-server.
    m["config"] = json!({});
    let path = write_manifest(dir.path(), &m);
    // Half the file is already there from an interrupted run.
    let models = root.join("var/lib/ray/models");
    std::fs::create_dir_all(&models).unwrap();
    let half = body.len() / 2;
    std::fs::write(models.join("m.gguf.part"), &body[..half]).unwrap();
    let output = provision(&path, &["--json"]);
    let report = json_report(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        server.ranges.lock().as_slice(),
        [Some(format!("bytes={half}-"))]
    );
    assert_eq!(std::fs::read(models.join("m.gguf")).unwrap(), body);
    assert!(!models.join("m.gguf.part").exists());
    let action = &report["actions"][0];
    assert_eq!(
        (action["kind"].as_str(), action["status"].as_str()),
        (Some("model"), Some("fetched"))
    );
    assert!(
        action["detail"].as_str().unwrap().contains("resumed after"),
        "{action}"
    );
    assert!(report["memory"].is_null(), "{report}");

    // From nothing: a plain GET.
    std::fs::remove_file(models.join("m.gguf")).unwrap();
    let output = provision(&path, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(server.ranges.lock().last().unwrap(), &None);
    assert_eq!(std::fs::read(models.join("m.gguf")).unwrap(), body);
}

#[test]
fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let source = small_model(dir.path(), "m.gguf");
    let sha = sha256_file(&source).unwrap();
    let path = write_manifest(
        dir.path(),
        &manifest(
            &root,
            vec![model(
                "m",
                "m.gguf",
                Some(format!("file://{}", source.display())),
                &sha,
                18231,
            )],
        ),
    );
    let output = provision(&path, &["--dry-run"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("would fetch") && out.contains("would create"),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    assert!(!root.exists(), "{:?}", files_below(&root));
    let output = provision(&path, &["--dry-run", "--json"]);
    let report = json_report(&output);
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["changed"], true);
    assert!(!root.exists());
}
