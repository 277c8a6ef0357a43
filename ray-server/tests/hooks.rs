//! Event hooks against a real gateway process: a command hook and a URL hook receive the events
//! of a scripted run (a backend stopped and started again, a job that fails for good), the URL
//! hook's deliveries are signed like callbacks, a hook that hangs is timed out and counted, a
//! job whose callback is refused until its attempts run out sends `callback_gave_up`, a flood of
//! events beyond the queue is counted as dropped while requests keep being served, every drop is
//! reported once by a `hooks_dropped` event (even one a report that found the queue full carried
//! over), and memory going critical and easing (read from a fabricated cgroup) reaches a command
//! hook.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

mod jobs_support;
mod util;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny OpenAI-compatible backend on `port` until the returned handle is aborted.
async fn backend(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let models = request.uri().path() == "/v1/models";
                    let asked = request.into_body().collect().await.unwrap().to_bytes();
                    if String::from_utf8_lossy(&asked).contains("doomed") {
                        // A request this backend always fails: its job fails for good.
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        return Ok(response);
                    }
                    let body = if models {
                        serde_json::json!({"object": "list", "data": [{"id": "m", "object": "model"}]})
                    } else {
                        serde_json::json!({
                            "id": "x", "object": "chat.completion", "model": "m",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "ok"}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                        })
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The secret the gateway signs callbacks and URL hooks with in these tests.
const SECRET: &str = "hook-signing-secret-0123456789";

/// Deliveries seen: (x-ray-event header, body).
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Receives URL hook deliveries, and counts those whose signature is not [`SECRET`]'s.
async fn receiver() -> (SocketAddr, Seen, Arc<AtomicUsize>) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let unsigned = Arc::new(AtomicUsize::new(0));
    let bad = unsigned.clone();
    let store = seen.clone();
    let addr = jobs_support::serve(move |request: Request<hyper::body::Incoming>| {
        let store = store.clone();
        let bad = bad.clone();
        async move {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let kind = header("x-ray-event");
            let signature = header(ray_runtime::jobs::SIGNATURE_HEADER);
            let timestamp: u64 = header(ray_runtime::jobs::TIMESTAMP_HEADER)
                .parse()
                .unwrap_or(0);
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if signature != ray_runtime::jobs::sign(SECRET.as_bytes(), timestamp, &body) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
            store
                .lock()
                .push((kind, serde_json::from_slice(&body).unwrap_or_default()));
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (addr, seen, unsigned)
}

struct Gateway {
    child: Child,
    port: u16,
}

/// Whether a gateway on `port` answers `GET /livez` with 200.
fn answers_livez(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

impl Gateway {
    fn start(dir: &Path, config: &str) -> Gateway {
        let path = dir.join("ray.json");
        std::fs::write(&path, config).unwrap();
        let port = serde_json::from_str::<serde_json::Value>(config).unwrap()["server"]["port"]
            .as_u64()
            .unwrap() as u16;
        let log = dir.join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
            .arg("--config")
            .arg(&path)
            .env("RAY_CALLBACK_SIGNING_SECRET", SECRET)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        // Ready once /livez answers 200: a bare connect can succeed without the gateway (a
        // loopback connection to a free port may connect to itself).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_livez(port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the gateway exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Gateway { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_and_url_hooks_get_the_events_of_a_scripted_run() {
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    let backend_port = free_port();
    let mut running = Some(backend(backend_port).await);
    let (hook_addr, posted, unsigned) = receiver().await;
    let port = free_port();
    let config = serde_json::json!({
        "profile": "tiny",
        "server": {"port": port},
        "models": [{"id": "m", "warmOnBoot": false, "adapter": {
            "kind": "openai-compatible", "baseUrl": format!("http://127.0.0.1:{backend_port}"),
            "timeoutMs": 1000}}],
        "asyncQueue": {"enabled": true, "storageDir": dir.path().join("jobs"),
            "maxAttempts": 1, "callbackAllowPrivateNetwork": true},
        "hooks": [
            {"command": ["/bin/sh", "-c", format!("cat >> {}", events_file.display())]},
            {"events": ["backend_down", "backend_recovered", "job_failed"],
             "url": format!("http://{hook_addr}/hook")},
            {"events": ["model_state_changed"], "command": ["/bin/sleep", "30"], "timeoutMs": 200}
        ]
    })
    .to_string();
    let gateway = Gateway::start(dir.path(), &config);
    let http = reqwest::Client::new();
    let ok = http
        .post(gateway.url("/v1/infer"))
        .json(&serde_json::json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // A job the backend always fails fails for good (one attempt): job_failed.
    let posted_kinds = |posted: &Arc<Mutex<Vec<(String, serde_json::Value)>>>| {
        posted
            .lock()
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    let job = http
        .post(gateway.url("/v1/jobs"))
        .json(&serde_json::json!({"input": "doomed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status(), 202);
    assert!(
        within(Duration::from_secs(15), || posted_kinds(&posted)
            .contains(&"job_failed".into()))
        .await,
        "job_failed: {:?}",
        posted_kinds(&posted)
    );

    // The backend goes away: backend_down.
    running.take().unwrap().abort();
    assert!(
        within(Duration::from_secs(15), || posted_kinds(&posted)
            .contains(&"backend_down".into()))
        .await,
        "backend_down: {:?}",
        posted_kinds(&posted)
    );

    // It comes back: backend_recovered.
    let _running = backend(backend_port).await;
    assert!(
        within(Duration::from_secs(15), || posted_kinds(&posted)
            .contains(&"backend_recovered".into()))
        .await,
        "backend_recovered: {:?}",
        posted_kinds(&posted)
    );

    // Every delivery is signed like a callback.
    assert_eq!(
        unsigned.load(Ordering::Relaxed),
        0,
        "{:?}",
        posted_kinds(&posted)
    );
    // Every event has the stable shape, and the command hook saw the same ones.
    for (kind, body) in posted.lock().iter() {
        assert_eq!(body["type"], kind.as_str());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert!(body["time"].as_str().unwrap().ends_with('Z'));
    }
    let down = posted
        .lock()
        .iter()
        .find(|(k, _)| k == "backend_down")
        .map(|(_, b)| b.clone())
        .unwrap();
    assert_eq!(down["model"], "m");
    let lines = std::fs::read_to_string(&events_file).unwrap_or_default();
    let from_command: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in [
        "backend_down",
        "job_failed",
        "backend_recovered",
        "model_state_changed",
    ] {
        assert!(
            from_command.iter().any(|e| e["type"] == kind),
            "the command hook missed {kind}: {lines}"
        );
    }

    // The hook that hangs was killed after its timeout, and counted.
    let metrics = http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let timeouts = util::metric_value(&metrics, "ray_hook_timeouts_total").unwrap();
    assert!(timeouts >= 1.0, "{metrics}");
    assert_eq!(
        util::metric_value(&metrics, "ray_hooks_configured"),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_events_is_dropped_and_counted_while_requests_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = ray_core::config::ConfigLoader::new()
        .with_json(
            "inline",
            serde_json::json!({
                "profile": "tiny",
                "model": {"adapter": {"kind": "mock", "latencyMs": 0}},
                "hooks": [{"command": ["/bin/sleep", "1"], "timeoutMs": 5000}]
            })
            .to_string(),
        )
        .load()
        .unwrap()
        .config;
    let runtime = ray_runtime::Runtime::new(config).unwrap();
    let _background = runtime.start();
    let started = Instant::now();
    for i in 0..5_000u32 {
        let mut fields = serde_json::Map::new();
        fields.insert("n".into(), i.into());
        runtime.emit_event("config_reloaded", fields);
    }
    let emitting = started.elapsed();
    // Requests are served meanwhile.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let sent = Instant::now();
        let answer = runtime
            .infer(ray_core::wire::InferRequest::new(format!("request {i}")))
            .await;
        assert!(answer.is_ok());
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let metrics = runtime.metrics().to_prometheus_text();
    let dropped =
        util::metric_value(&metrics, r#"ray_hook_events_total{outcome="dropped"}"#).unwrap();
    let queued =
        util::metric_value(&metrics, r#"ray_hook_events_total{outcome="queued"}"#).unwrap();
    assert!(dropped > 4_000.0, "{metrics}");
    assert!(queued <= 300.0, "{metrics}");
    eprintln!(
        "hooks: 5000 events emitted in {emitting:?} ({dropped} dropped); request p50 {:?}, p99 {:?} meanwhile",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
    drop(dir);
}

/// A host laid out like `/` for the pressure readings: the gateway in `ray.service` under a
/// 1 GiB cgroup limit, using `mib` of it.
fn pressure_host(root: &Path, mib: u64) {
    let write = |relative: &str, contents: &str| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    };
    let unit = "sys/fs/cgroup/system.slice/ray.service";
    write("proc/self/cgroup", "0::/system.slice/ray.service\n");
    write("proc/self/status", "VmRSS:\t    6144 kB\n");
    write("sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    write(&format!("{unit}/memory.max"), &(1024u64 << 20).to_string());
    write(&format!("{unit}/memory.current"), &(mib << 20).to_string());
    write(
        &format!("{unit}/memory.events"),
        "high 0\nmax 0\noom 0\noom_kill 0\n",
    );
    write(
        &format!("{unit}/cpu.stat"),
        "usage_usec 10\nnr_periods 10\nnr_throttled 0\nthrottled_usec 0\n",
    );
    write(&format!("{unit}/cpu.max"), "150000 100000\n");
    let calm = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    for file in [
        "proc/pressure/memory".to_string(),
        "proc/pressure/cpu".to_string(),
        format!("{unit}/memory.pressure"),
        format!("{unit}/cpu.pressure"),
    ] {
        write(&file, calm);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_going_critical_and_easing_reaches_a_command_hook() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    pressure_host(&host, 200);
    let events_file = dir.path().join("events.jsonl");
    let config = ray_core::config::ConfigLoader::new()
        .with_json(
            "inline",
            serde_json::json!({
                "profile": "tiny",
                "model": {"adapter": {"kind": "mock", "latencyMs": 0}},
                "hooks": [{
                    "events": ["memory_critical_started", "memory_critical_ended",
                               "degradation_changed"],
                    "command": ["/bin/sh", "-c", format!("cat >> {}", events_file.display())]
                }]
            })
            .to_string(),
        )
        .load()
        .unwrap()
        .config;
    let runtime = ray_runtime::Runtime::builder(config)
        .pressure_sources(
            ray_runtime::PressureSources::under(&host).with_sample_interval(Duration::ZERO),
        )
        .build()
        .unwrap();
    let _background = runtime.start();
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let types = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    // Let the watcher see the calm host once, then fill the cgroup.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(types(&events()), Vec::<String>::new());
    pressure_host(&host, 1_010);
    assert!(
        within(Duration::from_secs(10), || types(&events())
            .contains(&"memory_critical_started".into()))
        .await,
        "{:?}",
        types(&events())
    );
    pressure_host(&host, 300);
    assert!(
        within(Duration::from_secs(10), || types(&events())
            .contains(&"memory_critical_ended".into()))
        .await,
        "{:?}",
        types(&events())
    );
    // The degradation event of the easing may be written after memory_critical_ended (hooks
    // run two at a time), so it is waited for too.
    let eased = |seen: &[serde_json::Value]| {
        seen.iter().any(|e| {
            e["type"] == "degradation_changed"
                && e["from"]
                    .as_array()
                    .unwrap()
                    .contains(&"memory_pressure".into())
                && e["to"] == serde_json::json!([])
        })
    };
    assert!(
        within(Duration::from_secs(10), || eased(&events())).await,
        "{:?}",
        events()
    );
    let seen = events();
    let started = types(&seen)
        .iter()
        .position(|t| t == "memory_critical_started")
        .unwrap();
    let ended = types(&seen)
        .iter()
        .position(|t| t == "memory_critical_ended")
        .unwrap();
    assert!(started < ended, "{seen:?}");
    // The degradation reasons went to memory pressure and back, with both lists in the event.
    let degradation: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|e| e["type"] == "degradation_changed")
        .collect();
    assert!(
        degradation.iter().any(|e| e["to"]
            .as_array()
            .unwrap()
            .contains(&"memory_pressure".into())),
        "{seen:?}"
    );
    assert!(
        degradation.iter().any(|e| e["from"]
            .as_array()
            .unwrap()
            .contains(&"memory_pressure".into())
            && e["to"] == serde_json::json!([])),
        "{seen:?}"
    );
    for event in &seen {
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
    }
}

/// Answers every request `500` and records each one's idempotency key and delivery attempt.
async fn refusing_receiver() -> (SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let addr = jobs_support::serve(move |request: Request<hyper::body::Incoming>| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        store.lock().push((
            header(ray_runtime::jobs::IDEMPOTENCY_HEADER),
            header("x-ray-delivery-attempt"),
        ));
        async move {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    })
    .await;
    (addr, seen)
}

/// The events a `cat >> file` command hook wrote, one JSON object a line.
fn events_in(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_until_no_attempt_is_left_sends_callback_gave_up() {
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    let (receiver_addr, deliveries) = refusing_receiver().await;
    let port = free_port();
    let config = serde_json::json!({
        "profile": "tiny",
        "server": {"port": port},
        "model": {"adapter": {"kind": "mock", "latencyMs": 0}},
        "asyncQueue": {"enabled": true, "storageDir": dir.path().join("jobs"),
            "pollIntervalMs": 20, "maxCallbackAttempts": 3,
            "callbackAllowPrivateNetwork": true},
        "hooks": [{
            "events": ["callback_gave_up"],
            "command": ["/bin/sh", "-c", format!("cat >> {}", events_file.display())]
        }]
    })
    .to_string();
    let gateway = Gateway::start(dir.path(), &config);
    let http = reqwest::Client::new();
    let accepted = http
        .post(gateway.url("/v1/jobs"))
        .json(&serde_json::json!({
            "input": "hello",
            "callbackUrl": format!("http://{receiver_addr}/callback"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let job: serde_json::Value = accepted.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();

    let gave_up = || {
        events_in(&events_file)
            .into_iter()
            .find(|e| e["type"] == "callback_gave_up")
    };
    assert!(
        within(Duration::from_secs(30), || gave_up().is_some()).await,
        "no callback_gave_up; deliveries {:?}",
        deliveries.lock()
    );
    let event = gave_up().unwrap();
    // The documented fields: jobId, attempts, error; and the shape every event has.
    assert_eq!(event["jobId"], job_id.as_str(), "{event}");
    assert_eq!(event["attempts"], 3, "{event}");
    assert_eq!(
        event["error"], "the receiver answered 500 Internal Server Error",
        "{event}"
    );
    assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
    // The receiver saw every attempt, numbered, and no more after the last.
    let seen = deliveries.lock().clone();
    assert_eq!(
        seen,
        (1..=3)
            .map(|attempt| (job_id.clone(), attempt.to_string()))
            .collect::<Vec<_>>()
    );
    // The job itself succeeded: only its callback failed, and its record says so.
    let mut record = serde_json::Value::Null;
    for _ in 0..200 {
        record = http
            .get(gateway.url(&format!("/v1/jobs/{job_id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if record["callback"]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["callback"]["status"], "failed", "{record}");
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["callback"]["attempts"], 3, "{record}");
    assert_eq!(record["callback"]["lastError"], event["error"], "{record}");
}

/// A command hook for `config_reloaded` and `hooks_dropped` that holds each event until a gate
/// file appears in `dir` (`first` for the event whose `gate` field is "first", `rest` for the
/// others), then writes the event to a file of its own under `dir/out`. Each run leaves a file
/// under `dir/started` as it begins.
fn gated_hook(dir: &Path) -> serde_json::Value {
    std::fs::create_dir_all(dir.join("started")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let script = format!(
        r#"body=$(cat)
mktemp "{d}/started/run.XXXXXX" >/dev/null
case "$body" in *'"gate":"first"'*) gate=first ;; *) gate=rest ;; esac
while [ ! -e "{d}/$gate" ]; do sleep 0.02; done
printf '%s\n' "$body" > "$(mktemp "{d}/out/event.XXXXXX")""#,
        d = dir.display()
    );
    serde_json::json!({
        "events": ["config_reloaded", "hooks_dropped"],
        "command": ["/bin/sh", "-c", script],
        "timeoutMs": 60000
    })
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drop_is_reported_by_hooks_dropped_even_one_that_found_no_room_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = ray_core::config::ConfigLoader::new()
        .with_json(
            "inline",
            serde_json::json!({
                "profile": "tiny",
                "model": {"adapter": {"kind": "mock", "latencyMs": 0}},
                "hooks": [gated_hook(dir.path())]
            })
            .to_string(),
        )
        .load()
        .unwrap()
        .config;
    let runtime = ray_runtime::Runtime::new(config).unwrap();
    let _background = runtime.start();
    let counts = || {
        let metrics = runtime.metrics().to_prometheus_text();
        let count = |outcome: &str| {
            util::metric_value(
                &metrics,
                &format!(r#"ray_hook_events_total{{outcome="{outcome}"}}"#),
            )
            .unwrap() as u64
        };
        (count("queued"), count("dropped"))
    };
    let mut emitted = 0u64;
    let mut emit = |gate: &str| {
        let mut fields = serde_json::Map::new();
        fields.insert("gate".into(), gate.into());
        fields.insert("n".into(), emitted.into());
        emitted += 1;
        runtime.emit_event("config_reloaded", fields);
    };
    // Everything the hooks can hold while both runs wait: the queue, the two runs, and the
    // event the runner holds until a run ends.
    let capacity =
        (ray_runtime::hooks::HOOK_QUEUE + ray_runtime::hooks::HOOK_CONCURRENCY + 1) as u64;

    // A flood: the first event's run waits for `first`, every other one for `rest`.
    emit("first");
    for _ in 0..1_000 {
        emit("rest");
    }
    // Until the runner has taken what it can, more room may appear: fill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts().0 < capacity {
        assert!(
            Instant::now() < deadline,
            "the hooks never filled: {:?}",
            counts()
        );
        emit("rest");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (queued, dropped) = counts();
    assert_eq!(queued, capacity);
    assert!(dropped >= 1_001 - capacity, "{dropped}");
    let started = dir.path().join("started");
    assert!(
        within(Duration::from_secs(30), || files_in(&started) == 2).await,
        "{} runs started",
        files_in(&started)
    );

    // The first run ends: the runner starts the event it held and takes one from the queue,
    // which makes room for exactly one event. The next event to find it is queued, and the
    // `hooks_dropped` that follows it finds the queue full again.
    std::fs::write(dir.path().join("first"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (before, after) = loop {
        assert!(
            Instant::now() < deadline,
            "no room was made: {:?}",
            counts()
        );
        let before = counts();
        emit("rest");
        let after = counts();
        if after.0 > before.0 {
            break (before, after);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(after.0, before.0 + 1, "only one event found room");
    assert_eq!(
        after.1,
        before.1 + 1,
        "the hooks_dropped after it found none"
    );

    // Every run may end now; once the queue has drained, one more event brings the report.
    std::fs::write(dir.path().join("rest"), "").unwrap();
    let out = dir.path().join("out");
    assert!(
        within(Duration::from_secs(60), || files_in(&out) as u64
            == counts().0)
        .await,
        "{} of {} events written",
        files_in(&out),
        counts().0
    );
    let dropped_in_all = counts().1;
    emit("rest");
    assert!(
        within(Duration::from_secs(30), || files_in(&out) as u64
            == counts().0)
        .await,
        "{} of {} events written",
        files_in(&out),
        counts().0
    );
    assert_eq!(counts().1, dropped_in_all, "the last two found room");

    let events: Vec<serde_json::Value> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| {
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    let delivered = events
        .iter()
        .filter(|e| e["type"] == "config_reloaded")
        .count() as u64;
    let reports: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "hooks_dropped")
        .collect();
    assert!(
        !reports.is_empty(),
        "no hooks_dropped among {} events",
        events.len()
    );
    for report in &reports {
        assert!(report["dropped"].as_u64().unwrap() > 0, "{report}");
        assert!(
            report["id"].as_str().unwrap().starts_with("evt_"),
            "{report}"
        );
        assert!(report["time"].as_str().unwrap().ends_with('Z'), "{report}");
    }
    let reported: u64 = reports.iter().map(|r| r["dropped"].as_u64().unwrap()).sum();
    // Every event emitted arrived or was reported as dropped, and the metric counts those
    // plus the hooks_dropped events that found no room.
    assert_eq!(
        delivered + reported,
        emitted,
        "{delivered} delivered, {reported} reported"
    );
    assert!(
        dropped_in_all > reported,
        "{dropped_in_all} dropped, {reported} reported"
    );
}
