//! Supervised mode (`launchProfile.supervise`): the runtime starts a model's `llama-server`
//! itself with the command `ray-server render` would put in a unit, restarts it with backoff when it dies, tells the
//! runtime so readiness follows (`provider_warming` while it starts, `provider_unavailable`
//! while it is down), forwards its output into the gateway's JSON log, and stops it on
//! shutdown (SIGTERM, then SIGKILL after [`STOP_GRACE`]).
//!
//! The child is always waited for, so it never lingers as a zombie; it is killed if the
//! supervisor is dropped. It dies with the gateway even when the gateway is killed with
//! SIGKILL (a parent-death signal), and a child an earlier run left behind is ended at the
//! next start (pid files in the state directory): see [`super::child`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ray_core::config::LaunchProfile;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::child;
use super::launch::llama_command;
pub use super::run::{START_TIMEOUT, STOP_GRACE};
use super::run::{command, describe, forward, raise_oom_score, terminate};
use crate::runtime::Runtime;

/// The first restart delay; it doubles per quick failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying restarts after [`FIRST_BACKOFF`] again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often a starting child's port is tried.
const LISTEN_POLL: Duration = Duration::from_millis(100);

/// The running supervisor. Call [`Supervisor::shutdown`] to stop the child; dropping the
/// supervisor kills it.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The delay before restart number `failures` (1-based count of quick failures in a row).
pub fn restart_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

/// Starts supervising `llama-server` for the model `model` with `launch`, reporting to
/// `runtime` (the model's readiness follows the process). Call it from inside a Tokio runtime,
/// after the gateway's listener is bound.
pub fn spawn(
    runtime: Runtime,
    model: String,
    launch: LaunchProfile,
    api_key_env: Option<String>,
    state_dir: Option<PathBuf>,
) -> Supervisor {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(supervise(
        runtime,
        model,
        launch,
        api_key_env,
        state_dir,
        stopped,
    ));
    Supervisor { stop, task }
}

impl Supervisor {
    /// Stops the child (SIGTERM, SIGKILL after [`STOP_GRACE`]) and waits until it is gone.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Whether something accepts connections on the launch profile's address.
async fn listening(launch: &LaunchProfile) -> bool {
    let host = launch.host.trim_start_matches('[').trim_end_matches(']');
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect((host, launch.port)),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Waits until the child answers `GET /health` with 200 (its model loaded and warmed up), then
/// keeps its RSS and the time since it was started in the state directory's measured
/// footprints, which later sizing prefers to the estimate.
async fn measure(model: String, launch: LaunchProfile, pid: u32, spawned: Instant, dir: PathBuf) {
    let url = format!("{}/health", super::run::base_url(&launch));
    let client = reqwest::Client::new();
    while spawned.elapsed() < START_TIMEOUT {
        let healthy = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if healthy {
            let took = spawned.elapsed();
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| crate::pressure::parse_vm_rss(&status));
            let Some(rss) = rss else { return };
            let load_mib = rss.div_ceil(1 << 20);
            let estimate = crate::footprint::LlamaEstimate::of_launch(&launch)
                .map(|e| e.load_mib().ceil() as u64)
                .ok();
            tracing::info!(
                model = %model,
                pid,
                load_ms = took.as_millis() as u64,
                rss_mib = load_mib,
                estimated_mib = estimate,
                "llama-server loaded; footprint measured"
            );
            let measured = crate::footprint::Measured {
                key: crate::footprint::footprint_key(&launch),
                load_mib,
                load_ms: took.as_millis() as u64,
            };
            let written = tokio::task::spawn_blocking(move || {
                crate::footprint::MeasuredFootprints::open(&dir).record(&model, measured)
            })
            .await;
            if let Ok(Err(error)) = written {
                tracing::warn!(error = %error, "cannot keep the measured footprint");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Ended {
    Exited(String),
    Stopping,
}

async fn supervise(
    runtime: Runtime,
    model: String,
    launch: LaunchProfile,
    api_key_env: Option<String>,
    state_dir: Option<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let pid_file = state_dir.as_deref().map(|dir| child::pid_file(dir, &model));
    let program = llama_command(&launch).program;
    let mut restarts: u32 = 0;
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        if listening(&launch).await {
            tracing::error!(
                host = %launch.host,
                port = launch.port,
                "something already listens on llama-server's port (another llama-server, or \
                 one left by a gateway that was killed?); the new one will fail to bind"
            );
        }
        let started = Instant::now();
        let spawned = match super::slots::prepare_dir(&launch) {
            Ok(()) => match child::check_program(&program) {
                Ok(()) => child::spawn_tied(command(&launch, api_key_env.as_deref())).await,
                Err(error) => Err(error),
            },
            Err(reason) => Err(std::io::Error::other(reason)),
        };
        let ended = match spawned {
            Err(error) => Ended::Exited(format!("cannot start {program}: {error}")),
            Ok(mut process) => {
                let spec = llama_command(&launch);
                if let (Some(path), Some(pid)) = (&pid_file, process.id()) {
                    let mut cmdline = vec![spec.program];
                    cmdline.extend(spec.args);
                    if let Err(error) =
                        child::write_pid_file(path, &child::PidRecord { pid, cmdline })
                    {
                        tracing::warn!(
                            path = %path.display(),
                            error = %error,
                            "cannot record the llama-server child's pid"
                        );
                    }
                }
                let ended = run_child(
                    &runtime,
                    &model,
                    &launch,
                    &mut process,
                    restarts,
                    &mut stop,
                    state_dir.as_deref(),
                )
                .await;
                if let Some(path) = &pid_file {
                    let _ = std::fs::remove_file(path);
                }
                ended
            }
        };
        let exit = match ended {
            Ended::Stopping => break,
            Ended::Exited(exit) => exit,
        };
        failures = if started.elapsed() >= STABLE_AFTER {
            1
        } else {
            failures + 1
        };
        let delay = restart_delay(failures);
        restarts += 1;
        tracing::warn!(
            model = %model,
            exit = %exit,
            ran_ms = started.elapsed().as_millis() as u64,
            restarts,
            restart_in_ms = delay.as_millis() as u64,
            "llama-server exited; restarting it"
        );
        runtime.backend_process_exited(&model, exit, restarts, delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
    }
    runtime.backend_process_stopped(&model, restarts);
}

async fn run_child(
    runtime: &Runtime,
    model: &str,
    launch: &LaunchProfile,
    child: &mut Child,
    restarts: u32,
    stop: &mut watch::Receiver<bool>,
    state_dir: Option<&Path>,
) -> Ended {
    let spawned = Instant::now();
    let pid = child.id().unwrap_or(0);
    let mut measuring: Option<JoinHandle<()>> = None;
    raise_oom_score(pid);
    runtime.backend_process_starting(model, pid, restarts);
    tracing::info!(
        model,
        pid,
        restarts,
        command = %llama_command(launch).args.join(" "),
        "llama-server started"
    );
    let mut forwarders = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        forwarders.spawn(forward(stdout, "stdout", pid, None));
    }
    if let Some(stderr) = child.stderr.take() {
        forwarders.spawn(forward(stderr, "stderr", pid, None));
    }
    let start_deadline = tokio::time::sleep(START_TIMEOUT);
    tokio::pin!(start_deadline);
    let mut poll = tokio::time::interval(LISTEN_POLL);
    let mut answered = false;
    let ended = loop {
        tokio::select! {
            status = child.wait() => {
                break Ended::Exited(match status {
                    Ok(status) => describe(status),
                    Err(error) => format!("wait failed: {error}"),
                });
            }
            _ = stop.changed() => {
                let status = terminate(child).await;
                tracing::info!(
                    pid,
                    exit = %status.map_or_else(|| "unknown".to_string(), describe),
                    "llama-server stopped"
                );
                break Ended::Stopping;
            }
            () = &mut start_deadline, if !answered => {
                tracing::error!(
                    pid,
                    timeout_s = START_TIMEOUT.as_secs(),
                    "llama-server did not accept connections in time; restarting it"
                );
                let status = terminate(child).await;
                break Ended::Exited(format!(
                    "no connection within {} s ({})",
                    START_TIMEOUT.as_secs(),
                    status.map_or_else(|| "unknown".to_string(), describe)
                ));
            }
            _ = poll.tick(), if !answered => {
                if listening(launch).await {
                    answered = true;
                    runtime.backend_process_listening(model);
                    if let Some(dir) = state_dir {
                        measuring = Some(tokio::spawn(measure(
                            model.to_string(),
                            launch.clone(),
                            pid,
                            spawned,
                            dir.to_path_buf(),
                        )));
                    }
                }
            }
        }
    };
    if let Some(task) = measuring {
        task.abort();
    }
    // The pipes close with the process; let the forwarders write what is left (a grandchild
    // holding a pipe open must not hold the supervisor up).
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while forwarders.join_next().await.is_some() {}
    })
    .await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restart_delay(u32::MAX), MAX_BACKOFF);
    }
}
