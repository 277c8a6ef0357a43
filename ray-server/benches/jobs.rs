//! Job submission benchmark: how many jobs per second a release `ray-server` accepts, and the
//! latency of `POST /v1/jobs`, which answers only after the record is durable (temporary file,
//! `fdatasync`, rename, directory `fsync`). The same durable write done directly, one at a
//! time, is measured first as the floor.
//!
//! Run with `cargo bench -p ray-server --bench jobs`. Options through the environment:
//! `RAY_BENCH_JOBS` (submissions per scenario, default 1500), `RAY_BENCH_DIR` (where the job
//! store lives; default the system temporary directory; use the disk you will deploy on, a
//! tmpfs makes `fsync` free), `RAY_BENCH_ROUNDS` (rounds per scenario, the median is kept;
//! default 3), `RAY_BENCH_JSON` (write the report there).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::free_port;
use tokio::net::TcpStream;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("jobs bench: run it with `cargo bench -p ray-server --bench jobs`");
        return;
    }
    let jobs: u64 = std::env::var("RAY_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500)
        .min(1_900);
    let base = std::env::var_os("RAY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(jobs, &base));
    println!("{}", serde_json::to_string_pretty(&report).expect("report"));
    if let Ok(path) = std::env::var("RAY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report")).expect("write");
    }
}

#[derive(serde::Serialize)]
struct Latencies {
    count: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarise(mut samples: Vec<Duration>) -> Latencies {
    samples.sort();
    let at = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Latencies {
        count: samples.len(),
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// The durable write alone: what one accepted job costs the disk at least.
fn fsync_floor(dir: &Path, writes: usize) -> Latencies {
    let jobs = dir.join("floor");
    std::fs::create_dir_all(&jobs).expect("dir");
    let directory = std::fs::File::open(&jobs).expect("open dir");
    let record = vec![b'x'; 700];
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let started = Instant::now();
        let temp = jobs.join(format!(".tmp-{i}"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .expect("create");
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        drop(file);
        std::fs::rename(&temp, jobs.join(format!("job_{i}.json"))).expect("rename");
        directory.sync_all().expect("fsync dir");
        samples.push(started.elapsed());
    }
    let _ = std::fs::remove_dir_all(&jobs);
    summarise(samples)
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

async fn start(dir: &Path, mock_latency_ms: u64, dispatch: u32) -> Server {
    let port = free_port();
    let config = dir.join("ray.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":{mock_latency_ms}}}}},
                "scheduler":{{"concurrency":4,"requestTimeoutMs":120000}},
                "telemetry":{{"logLevel":"warn"}},
                "asyncQueue":{{"enabled":true,"storageDir":{:?},"maxJobs":2000,
                               "minFreeStorageMiB":1,"dispatchConcurrency":{dispatch}}}}}"#,
            dir.join("store").display().to_string()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
        .arg("--config")
        .arg(&config)
        .env("RAY_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ray-server");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "ray-server did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Server { child, addr }
}

#[derive(serde::Serialize)]
struct Scenario {
    name: &'static str,
    clients: usize,
    accepted: u64,
    errors: u64,
    accepted_per_second: f64,
    server_cpu_ms_per_job: f64,
    server_system_cpu_share: f64,
    latency: Latencies,
}

/// `clients` keep-alive connections submit `jobs` jobs between them, back to back.
async fn submit(addr: SocketAddr, clients: usize, jobs: u64) -> (Vec<Duration>, u64, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, errors) = (next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let next_body = || {
                let n = next.fetch_add(1, Ordering::Relaxed);
                (n < jobs).then(|| {
                    format!(
                        "{{\"input\":\"Draft a short follow-up email about order {n}.\",\"maxTokens\":64}}"
                    )
                })
            };
            common::post_until_done(addr, "/v1/jobs", 202, next_body, &errors).await
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    (latencies, errors.load(Ordering::Relaxed), started.elapsed())
}

/// Runs a scenario `rounds` times, each on a fresh server and store, and keeps the round with
/// the median throughput (the machine is shared and noisy).
async fn scenario(
    base: &Path,
    name: &'static str,
    clients: usize,
    jobs: u64,
    mock_latency_ms: u64,
    dispatch: u32,
    rounds: usize,
) -> Scenario {
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let server = start(dir.path(), mock_latency_ms, dispatch).await;
        let cpu_before = cpu_ms(server.child.id());
        let (latencies, errors, elapsed) = submit(server.addr, clients, jobs).await;
        let cpu_after = cpu_ms(server.child.id());
        let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
        drop(server);
        let accepted = latencies.len() as u64;
        runs.push(Scenario {
            name,
            clients,
            accepted,
            errors,
            accepted_per_second: accepted as f64 / elapsed.as_secs_f64(),
            server_cpu_ms_per_job: (user + system) / accepted.max(1) as f64,
            server_system_cpu_share: system / (user + system).max(1e-9),
            latency: summarise(latencies),
        });
    }
    runs.sort_by(|a, b| a.accepted_per_second.total_cmp(&b.accepted_per_second));
    let result = runs.swap_remove(runs.len() / 2);
    let errors = result.errors;
    let _ = writeln!(
        std::io::stderr(),
        "{name:>22} {clients:>3} clients: {:>7.0} jobs/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, server CPU {:.3} ms/job ({:.0}% system) ({} errors)",
        result.accepted_per_second,
        result.latency.p50_ms,
        result.latency.p90_ms,
        result.latency.p99_ms,
        result.server_cpu_ms_per_job,
        result.server_system_cpu_share * 100.0,
        errors
    );
    result
}

/// CPU time the process has used, in ms: (user, system).
fn cpu_ms(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name; 100 ticks/s.
    (ticks(11) * 10.0, ticks(12) * 10.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Memory with `jobs` jobs retained, and the time a restart over them takes to serve again
/// (recovery reads every record before the listener opens).
async fn restart_with(base: &Path, jobs: u64) -> serde_json::Value {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let server = start(dir.path(), 60_000, 1).await;
    let idle_rss = rss_kib(server.child.id());
    let (accepted, _, _) = submit(server.addr, 8, jobs).await;
    let loaded_rss = rss_kib(server.child.id());
    drop(server);
    let started = Instant::now();
    let server = start(dir.path(), 60_000, 1).await;
    let restart_ms = started.elapsed().as_secs_f64() * 1000.0;
    let recovered_rss = rss_kib(server.child.id());
    drop(server);
    let _ = writeln!(
        std::io::stderr(),
        "{:>22} {:>4} jobs : restart to listening {restart_ms:.1} ms; RSS idle {idle_rss} KiB, \
         with the jobs {loaded_rss} KiB, after recovery {recovered_rss} KiB",
        "restart",
        accepted.len(),
    );
    serde_json::json!({
        "jobs": accepted.len(),
        "restartToListeningMs": restart_ms,
        "rssKiB": { "idle": idle_rss, "withJobs": loaded_rss, "afterRecovery": recovered_rss },
    })
}

async fn run(jobs: u64, base: &Path) -> serde_json::Value {
    let filesystem = Command::new("df")
        .arg("--output=fstype")
        .arg(base)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let rounds: usize = std::env::var("RAY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let floor_dir = tempfile::tempdir_in(base).expect("tempdir");
    let floor = fsync_floor(floor_dir.path(), 1_000);
    let _ = writeln!(
        std::io::stderr(),
        "{:>22}   1 writer : p50 {:.2} ms, p99 {:.2} ms ({filesystem} at {})",
        "durable write floor",
        floor.p50_ms,
        floor.p99_ms,
        base.display()
    );
    let mut scenarios = Vec::new();
    // Jobs wait behind one long execution: the submissions alone.
    for clients in [1, 8, 32] {
        scenarios.push(scenario(base, "accept only", clients, jobs, 60_000, 1, rounds).await);
    }
    // Jobs execute (mock, no latency) while more arrive: three writes per job compete.
    scenarios.push(scenario(base, "accept while executing", 8, jobs, 0, 4, rounds).await);
    let restart = restart_with(base, jobs).await;
    // The floor again, to see whether the disk itself changed speed during the run.
    let floor_after = fsync_floor(floor_dir.path(), 1_000);
    let _ = writeln!(
        std::io::stderr(),
        "{:>22}   1 writer : p50 {:.2} ms, p99 {:.2} ms (after)",
        "durable write floor",
        floor_after.p50_ms,
        floor_after.p99_ms,
    );
    serde_json::json!({
        "jobsPerScenario": jobs,
        "rounds": rounds,
        "durableWriteFloorAfter": floor_after,
        "storage": { "path": base.display().to_string(), "filesystem": filesystem },
        "durableWriteFloor": floor,
        "scenarios": scenarios,
        "restart": restart,
    })
}
