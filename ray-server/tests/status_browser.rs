//! The status page in a real headless Chromium: loaded from a gateway on the mock under a
//! small load, its script polls `/status.json` and redraws; the numbers in the DOM must match
//! `/status.json` (within what can change between the two reads), the charts must be drawn,
//! and a screenshot is saved.
//!
//! Chromium is Debian's `chromium` package; when it is missing the test installs it with
//! `apt-get` (as root, or with sudo), and says SKIPPED loudly when it cannot. The screenshot
//! goes to `$CARGO_TARGET_TMPDIR/status.png`, or to the path in `RAY_STATUS_SCREENSHOT`
//! (`RAY_STATUS_SCREENSHOT=docs/status.png` refreshes the one in the docs).
#![allow(clippy::unwrap_used)]

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use util::{TestServer, post};

/// Where Chromium is, installing it when missing; `None` (after saying why) when it cannot be.
fn chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
    };
    if let Some(path) = find() {
        return Some(path);
    }
    eprintln!("chromium is missing: installing Debian's chromium package with apt-get");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "chromium"])) {
        return None;
    }
    find()
}

fn skipped(reason: &str) {
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED: the status page browser test: {reason}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
}

/// Runs headless Chromium on `url` with `args`, in a throwaway profile.
async fn run_chromium(chromium: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(chromium);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium did not finish within 120 s")
        .expect("chromium could not be started");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// `data-field` id → the text shown, from the DOM Chromium serialised.
fn dom_fields(dom: &str) -> BTreeMap<String, String> {
    // The markup, not the script that builds it.
    let dom = dom.split("<script>").next().unwrap_or(dom);
    let needle = "data-field=\"";
    dom.match_indices(needle)
        .filter_map(|(at, _)| {
            let rest = &dom[at + needle.len()..];
            let id_end = rest.find('"')?;
            let text_start = rest.find('>')? + 1;
            let text_end = text_start + rest[text_start..].find('<')?;
            Some((
                rest[..id_end].to_string(),
                unescape(&rest[text_start..text_end]),
            ))
        })
        .collect()
}

/// The first number in `text`.
fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What follows the last " / " (a limit), if any.
fn limit(text: &str) -> Option<&str> {
    text.rsplit_once(" / ").map(|(_, limit)| limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium_matches_status_json() {
    let Some(chromium) = chromium() else {
        skipped("chromium is not installed and could not be installed (apt-get failed)");
        return;
    };
    // The machine's own pressure signals, so the memory figures are real ones.
    let server = TestServer::start_reading(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":40}},
            "cache":{"enabled":true}}"#,
        None,
        ray_server::HttpLimits::default(),
        ray_runtime::PressureSources::system(),
    )
    .await;

    // A small load: two clients in a loop, some prompts repeated (cache hits), one bad
    // request in eight.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for client in 0..2 {
        let addr = server.addr;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = if n.is_multiple_of(12) {
                    r#"{"input":""}"#.to_string()
                } else if n.is_multiple_of(4) {
                    r#"{"input":"the same question again"}"#.to_string()
                } else {
                    format!(r#"{{"input":"load {client} {n}"}}"#)
                };
                let _ = util::raw_request(addr, &post("/v1/infer", &body)).await;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }));
    }
    // One chart point is ten seconds of samples; a screenshot for the docs gets a few more.
    let screenshot_path = std::env::var_os("RAY_STATUS_SCREENSHOT");
    let warm = if screenshot_path.is_some() { 65 } else { 12 };
    tokio::time::sleep(Duration::from_secs(warm)).await;

    let profile = tempfile::tempdir().unwrap();
    let url = server.url("/status");
    let dom = run_chromium(&chromium, profile.path(), &url, &["--dump-dom"]).await;
    let status = util::raw_request(
        server.addr,
        b"GET /status.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .json();

    // The script ran, polled /status.json and redrew the page.
    assert!(
        dom.contains("data-live=\"1\""),
        "the script did not poll:\n{dom}"
    );
    let shown = dom_fields(&dom);
    let fields = status["fields"].as_object().unwrap();
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        fields
            .keys()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "the page shows exactly the figures of /status.json"
    );
    // Figures that move with time or the machine, not with the gateway's counters.
    let volatile = [
        "uptime",
        "memory.rss",
        "memory.cgroup",
        "memory.psi",
        "memory.state",
        "cpu.state",
        "status",
        "tokens.perSecond",
        "wait.p50",
        "wait.p99",
        "latency.p50",
        "latency.p99",
        "http.connections",
        "queue.oldestWait",
    ];
    // Counters only grow between the page's last poll and the read that follows.
    let growing = [
        "requests.total",
        "dedupe.followers",
        "refusals.lastHour",
        "degradation.decisions",
    ];
    let mut compared = 0;
    for (id, text) in &shown {
        let json_text = fields[id]["text"].as_str().unwrap();
        if volatile.contains(&id.as_str()) {
            assert!(!text.is_empty(), "{id} is empty on the page");
            continue;
        }
        if growing.contains(&id.as_str()) {
            let (page, now) = (
                first_number(text).unwrap(),
                first_number(json_text).unwrap(),
            );
            assert!(
                page <= now,
                "{id}: the page shows {page}, /status.json later {now}"
            );
            assert!(
                page >= now * 0.5,
                "{id}: the page shows {page}, /status.json {now}: was the page refreshed?"
            );
        } else if let Some(bound) = limit(json_text) {
            // "used / limit": the use moves, the limit does not.
            assert_eq!(limit(text), Some(bound), "{id}: {text:?} vs {json_text:?}");
        } else if id == "cache.hitRatio" {
            assert!(
                text.contains('%') && json_text.contains('%'),
                "{id}: {text:?}"
            );
        } else {
            assert_eq!(text, json_text, "{id}");
        }
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} figures compared");
    assert!(first_number(&shown["requests.total"]).unwrap() > 20.0);
    assert!(first_number(&shown["refusals.lastHour"]).unwrap() >= 1.0);
    assert!(dom.contains("<td>invalid_request</td>"), "refusals by code");
    // The model table, as /status.json has it.
    let model = &status["models"][0];
    assert!(dom.contains(&format!(
        "<td class=\"st-ready\" title=\"\">ready</td><td>mock</td><td>{}</td>",
        model["contextWindow"]
    )));
    // The charts are drawn: the latency chart has a line with points.
    let latency = dom
        .split("data-chart=\"latency\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap();
    assert!(
        latency.contains("<polyline class=\"s0\" fill=\"none\" points=\"")
            && !latency.contains("points=\"\""),
        "latency chart: {latency}"
    );
    assert!(latency.contains("max "), "{latency}");

    // A screenshot, with the load still running.
    let path = screenshot_path
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("status.png"));
    let _ = std::fs::remove_file(&path);
    let screenshot = format!("--screenshot={}", path.display());
    run_chromium(
        &chromium,
        profile.path(),
        &url,
        &[&screenshot, "--window-size=1200,1600"],
    )
    .await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(bytes > 10_000 && bytes < 300 * 1024, "{bytes} bytes");
    println!("screenshot: {} ({bytes} bytes)", path.display());

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    server.stop().await;
}

/// With auth on, the page a browser gets without the key shows no figure and its script asks
/// for the key (kept in session storage, sent as a Bearer header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_page_asks_for_the_key_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        skipped("chromium is not installed and could not be installed (apt-get failed)");
        return;
    };
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true}}"#,
        Some("key-one"),
    )
    .await;
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(
        &chromium,
        profile.path(),
        &server.url("/status"),
        &["--dump-dom"],
    )
    .await;
    let markup = dom.split("<script>").next().unwrap();
    assert!(
        markup.contains("<form id=\"key\" style=\"display: block;\">"),
        "the key form is not shown:\n{markup}"
    );
    assert!(!markup.contains("data-field"), "{markup}");
    assert!(
        !dom.contains("data-live=\"1\""),
        "no figures without the key"
    );
    server.stop().await;
}
