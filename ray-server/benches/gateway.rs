//! Gateway benchmark: start-up time, idle and loaded RSS, and `/v1/infer` throughput and
//! latency through a release `ray-server` on the mock provider (latency 0, cache off),
//! against a bare hyper server answering a fixed body of the same size, both driven by the
//! same load generator in the same run.
//!
//! Run with `cargo bench -p ray-server --bench gateway`. Options through the environment:
//! `RAY_BENCH_SECONDS` (per scenario, default 3), `RAY_BENCH_JSON` (write the report there).
//! `tools/wrk-gateway` also starts this binary as its bare server, and with `RAY_WRK_FLOOR=1`
//! as the floor servers of [`Floor`].

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::free_port;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const BARE_MODE: &str = "RAY_BENCH_BARE_SERVER_BODY";

fn main() {
    if let Ok(body_path) = std::env::var(BARE_MODE) {
        bare_server(&body_path);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("gateway bench: run it with `cargo bench -p ray-server --bench gateway`");
        return;
    }
    let seconds: u64 = std::env::var("RAY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(Duration::from_secs(seconds)));
    println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    if let Ok(path) = std::env::var("RAY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report")).expect("write");
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_ray(config: &std::path::Path, port: u16) -> (Child, Instant) {
    let started = Instant::now();
    // RAY_BENCH_SERVER_BIN runs another build of ray-server (an older commit, to compare).
    let binary = std::env::var("RAY_BENCH_SERVER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ray-server").to_string());
    let child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("RAY_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ray-server");
    (child, started)
}

/// Polls `/livez` until it answers 200; returns the time since `started`.
async fn first_livez(addr: SocketAddr, started: Instant) -> Duration {
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await
            && let Ok((mut sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        {
            tokio::spawn(connection);
            let request = Request::get("/livez")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .expect("request");
            if let Ok(response) = sender.send_request(request).await
                && response.status() == 200
            {
                return started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[derive(serde::Serialize)]
struct LoadResult {
    clients: usize,
    requests: u64,
    errors: u64,
    throughput_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` connections, each sending requests back to back for `duration`.
async fn load(addr: SocketAddr, clients: usize, duration: Duration, distinct: bool) -> LoadResult {
    load_bodies(addr, clients, duration, distinct, false).await
}

/// `with_tasks`: every third request carries `"task":"classify"` (a routing rule sends it to
/// another model when the config has rules; a one-model config ignores it).
async fn load_bodies(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    distinct: bool,
    with_tasks: bool,
) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stop = stop.clone();
        let counter = counter.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let next_body = || {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                Some(if with_tasks && n.is_multiple_of(3) {
                    format!(
                        "{{\"input\":\"benchmark prompt number {n}\",\"cache\":false,\"task\":\"classify\"}}"
                    )
                } else if distinct {
                    format!("{{\"input\":\"benchmark prompt number {n}\",\"cache\":false}}")
                } else {
                    "{\"input\":\"benchmark prompt\",\"cache\":false}".to_string()
                })
            };
            common::post_until_done(addr, "/v1/infer", 200, next_body, &errors).await
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    LoadResult {
        clients,
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        throughput_rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
    }
}

/// Writes the bench's gateway config (the mock at latency 0, cache off, roomy limits) with
/// `extra` top-level fields (each followed by a comma) to `dir/name`.
fn write_config(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let log_level = std::env::var("RAY_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    std::fs::write(
        &path,
        format!(
            r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},{extra}
            "cache":{{"enabled":false}},
            "scheduler":{{"concurrency":8,"maxQueue":512,"maxQueuedTokens":262144,
                         "maxInflightTokens":65536,"requestTimeoutMs":30000,"affinityLookahead":8}},
            "gracefulDegradation":{{"queueDepthThreshold":500}},
            "telemetry":{{"logLevel":"{log_level}"}}}}"#
        ),
    )
    .expect("config");
    path
}

async fn run(duration: Duration) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "ray.bench.json", "");

    // Start-up: spawn to first 200 on /livez, median of 10.
    let mut startups = Vec::new();
    for _ in 0..10 {
        let port = free_port();
        let (child, started) = spawn_ray(&config, port);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let elapsed = first_livez(addr, started).await;
        startups.push(elapsed);
        drop(Server { child, addr });
    }
    startups.sort();
    let startup_median_ms = startups[startups.len() / 2].as_secs_f64() * 1000.0;
    let startup_max_ms = startups[startups.len() - 1].as_secs_f64() * 1000.0;

    // Ray under load.
    let port = free_port();
    let (child, started) = spawn_ray(&config, port);
    let ray = Server {
        addr: ([127, 0, 0, 1], port).into(),
        child,
    };
    first_livez(ray.addr, started).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kib = rss_kib(ray.child.id(), "VmRSS:");

    // Capture one real response so the bare server answers with a body of the same size.
    let sample = reqwest_like_post(ray.addr).await;
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, &sample).expect("body");

    let bare_port = free_port();
    let bare = Server {
        child: Command::new(std::env::current_exe().expect("exe"))
            .env(BARE_MODE, &body_path)
            .env("RAY_BENCH_BARE_PORT", bare_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn bare"),
        addr: ([127, 0, 0, 1], bare_port).into(),
    };
    first_livez(bare.addr, Instant::now()).await;

    // Ray and the bare server alternate, several rounds per level, and the medians are kept:
    // this machine is shared and noisy, and a ratio from one run means little.
    let rounds: usize = std::env::var("RAY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut rows = Vec::new();
    for clients in [1usize, 16, 64] {
        let mut ray_runs = Vec::new();
        let mut bare_runs = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let through_ray = load(ray.addr, clients, duration, true).await;
            let bare_result = load(bare.addr, clients, duration, true).await;
            ratios.push(through_ray.throughput_rps / bare_result.throughput_rps.max(1e-9));
            ray_runs.push(through_ray);
            bare_runs.push(bare_result);
        }
        let ratio = median(&mut ratios.clone());
        let through_ray = median_run(ray_runs);
        let bare_result = median_run(bare_runs);
        let _ = writeln!(
            std::io::stderr(),
            "{clients:>3} clients: ray {:>8.0} rps p50 {:.3} ms p99 {:.3} ms | bare {:>8.0} rps p50 {:.3} ms p99 {:.3} ms | median ratio {:.2} (rounds {:?})",
            through_ray.throughput_rps,
            through_ray.p50_ms,
            through_ray.p99_ms,
            bare_result.throughput_rps,
            bare_result.p50_ms,
            bare_result.p99_ms,
            ratio,
            ratios
                .iter()
                .map(|r| (r * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        rows.push(serde_json::json!({
            "clients": clients,
            "ray": through_ray,
            "bare": bare_result,
            "throughputRatio": ratio,
            "roundRatios": ratios,
        }));
    }
    let loaded_rss_kib = rss_kib(ray.child.id(), "VmRSS:");
    let peak_rss_kib = rss_kib(ray.child.id(), "VmHWM:");
    drop(bare);

    // Several models: the same load through three mock models routed by rules (a task rule,
    // a prompt-length rule that never matches, the default) against the one-model gateway,
    // alternating, at 64 clients.
    let multi_config = write_config(
        dir.path(),
        "ray.bench.models.json",
        r#""models":[{"id":"drafter"},{"id":"classifier"},{"id":"long"}],
            "routing":{"rules":[{"name":"classify","tasks":["classify"],"model":"classifier"},
                                {"name":"long","minPromptTokens":4000,"model":"long"}]},"#,
    );
    let port = free_port();
    let (child, started) = spawn_ray(&multi_config, port);
    let multi = Server {
        addr: ([127, 0, 0, 1], port).into(),
        child,
    };
    first_livez(multi.addr, started).await;
    let mut one_runs = Vec::new();
    let mut multi_runs = Vec::new();
    let mut model_ratios = Vec::new();
    for _ in 0..rounds {
        let one = load_bodies(ray.addr, 64, duration, true, true).await;
        let three = load_bodies(multi.addr, 64, duration, true, true).await;
        model_ratios.push(three.throughput_rps / one.throughput_rps.max(1e-9));
        one_runs.push(one);
        multi_runs.push(three);
    }
    let models_ratio = median(&mut model_ratios.clone());
    let one = median_run(one_runs);
    let three = median_run(multi_runs);
    let _ = writeln!(
        std::io::stderr(),
        " 64 clients: one model {:>8.0} rps p50 {:.3} ms | three models by rules {:>8.0} rps p50 {:.3} ms | median ratio {:.3} (rounds {:?})",
        one.throughput_rps,
        one.p50_ms,
        three.throughput_rps,
        three.p50_ms,
        models_ratio,
        model_ratios
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    serde_json::json!({
        "severalModels": {
            "clients": 64,
            "oneModel": one,
            "threeModelsByRules": three,
            "throughputRatio": models_ratio,
            "roundRatios": model_ratios,
        },
        "startupToFirstLivezMs": { "median": startup_median_ms, "max": startup_max_ms, "runs": 10 },
        "rssKiB": { "idle": idle_rss_kib, "afterLoad": loaded_rss_kib, "peak": peak_rss_kib },
        "responseBytes": sample.len(),
        "secondsPerScenario": duration.as_secs(),
        "rounds": rounds,
        "infer": rows,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The run with the median throughput.
fn median_run(mut runs: Vec<LoadResult>) -> LoadResult {
    runs.sort_by(|a, b| a.throughput_rps.total_cmp(&b.throughput_rps));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

async fn reqwest_like_post(addr: SocketAddr) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::post("/v1/infer")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"input\":\"benchmark prompt number 0\",\"cache\":false}",
        )))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

/// The baseline: hyper answering every request with the same bytes, after reading the body
/// (and, with `RAY_BENCH_BARE_WORK`, doing one of the [`Floor`]s' work first).
fn bare_server(body_path: &str) {
    let body = Bytes::from(std::fs::read(body_path).expect("body"));
    let port: u16 = std::env::var("RAY_BENCH_BARE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = FloorServer::from_env(&body);
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let work = work.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        let work = work.clone();
                        async move {
                            let collected = request.into_body().collect().await;
                            let body =
                                if let (Some(floor), Ok(collected)) = (work.as_ref(), collected) {
                                    floor.answer(&collected.to_bytes())
                                } else {
                                    body
                                };
                            let mut response = Response::new(Full::new(body));
                            response.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static(
                                    "application/json; charset=utf-8",
                                ),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What the bare server does per request beyond answering (`RAY_BENCH_BARE_WORK`): the floors
/// of a JSON gateway, to tell Ray's own features from the work any gateway of this kind does.
#[derive(Clone, Copy)]
enum Floor {
    /// Parse the body into a typed request, take one shared lock, and answer the response's
    /// bytes serialised once at start with the id and the input written in front (`concat`).
    Concat,
    /// The same, but serialise the whole response for every request (`serialize`).
    Serialize,
    /// Parse the body into a `serde_json::Value`, clone the response's value, insert the id
    /// and the input, and serialise it (`value`).
    Value,
}

/// The state of a floor server: its mode, the response as a value and as bytes, and a counter
/// behind a lock standing for the one shared structure every request touches.
struct FloorServer {
    floor: Floor,
    template: serde_json::Value,
    serialized: Vec<u8>,
    counter: parking_lot::Mutex<u64>,
}

impl FloorServer {
    fn from_env(body: &[u8]) -> Option<Arc<Self>> {
        let floor = match std::env::var("RAY_BENCH_BARE_WORK").ok()?.as_str() {
            "concat" => Floor::Concat,
            "serialize" => Floor::Serialize,
            "value" => Floor::Value,
            other => panic!("RAY_BENCH_BARE_WORK={other}: expected concat, serialize or value"),
        };
        let template: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
        let serialized = serde_json::to_vec(&template).expect("serialise");
        Some(Arc::new(Self {
            floor,
            template,
            serialized,
            counter: parking_lot::Mutex::new(0),
        }))
    }

    fn answer(&self, request: &[u8]) -> Bytes {
        #[derive(serde::Deserialize)]
        struct Request<'a> {
            #[serde(borrow)]
            input: std::borrow::Cow<'a, str>,
            #[serde(default, rename = "cache")]
            _cache: Option<bool>,
        }
        let next = || {
            let mut counter = self.counter.lock();
            *counter += 1;
            format!("req_{:016x}", *counter)
        };
        match self.floor {
            Floor::Concat | Floor::Serialize => {
                let Ok(parsed) = serde_json::from_slice::<Request<'_>>(request) else {
                    return Bytes::from_static(b"{\"error\":\"bad request\"}");
                };
                let id = next();
                let fresh;
                let rest: &[u8] = match self.floor {
                    Floor::Concat => &self.serialized,
                    _ => {
                        fresh = serde_json::to_vec(&self.template).unwrap_or_default();
                        &fresh
                    }
                };
                let mut out = Vec::with_capacity(rest.len() + id.len() + parsed.input.len() + 32);
                out.extend_from_slice(b"{\"requestId\":");
                let _ = serde_json::to_writer(&mut out, &id);
                out.extend_from_slice(b",\"echo\":");
                let _ = serde_json::to_writer(&mut out, &parsed.input);
                out.push(b',');
                out.extend_from_slice(rest.get(1..).unwrap_or_default());
                Bytes::from(out)
            }
            Floor::Value => {
                let parsed: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
                let mut response = self.template.clone();
                if let Some(object) = response.as_object_mut() {
                    object.insert("requestId".into(), next().into());
                    if let Some(input) = parsed.get("input") {
                        object.insert("echo".into(), input.clone());
                    }
                }
                Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
            }
        }
    }
}
