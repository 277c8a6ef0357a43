//! Running a `llama-server` child, for the supervisor and the lifecycle's driver alike: its
//! command (tied to the gateway, without the gateway's settings), its output forwarded into
//! the log, its `oom_score_adj`, and its end (SIGTERM, then SIGKILL after [`STOP_GRACE`]).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ray_core::config::LaunchProfile;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::child;
use super::launch::{LLAMA_OOM_SCORE_ADJUST, llama_command};

/// How long the child gets to exit after SIGTERM before SIGKILL. The gateway's drain (30 s)
/// plus this stays inside systemd's `TimeoutStopSec=35`.
pub const STOP_GRACE: Duration = Duration::from_secs(4);
/// A child that does not accept connections (supervisor) or answer `/health` (lifecycle)
/// within this long is stopped.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest output line forwarded; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// Where a `llama-server` started with `launch` listens: `http://host:port` (an IPv6 host in
/// brackets).
pub(crate) fn base_url(launch: &LaunchProfile) -> String {
    let host = launch.host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("http://[{host}]:{}", launch.port)
    } else {
        format!("http://{host}:{}", launch.port)
    }
}

/// How a child ended, as a log line says it.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_string(),
    }
}

pub(crate) fn command(launch: &LaunchProfile, api_key_env: Option<&str>) -> Command {
    let spec = llama_command(launch);
    let (program, args) = child::tied_command(&spec.program, &spec.args);
    let mut command = Command::new(program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The gateway's own settings and keys are none of the backend's business.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RAY_") {
            command.env_remove(&name);
        }
    }
    // llama-server reads its key from LLAMA_API_KEY; pass it there, not on the command line.
    if let Some(name) = api_key_env
        && let Ok(key) = std::env::var(name)
    {
        command.env("LLAMA_API_KEY", key);
    }
    command
}

/// Raises the child's `oom_score_adj` to the value the separate unit would give it, so the
/// kernel picks it before the gateway when memory runs out. Raising is allowed unprivileged.
pub(crate) fn raise_oom_score(pid: u32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    let current: i32 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if current < LLAMA_OOM_SCORE_ADJUST
        && let Err(error) = std::fs::write(&path, LLAMA_OOM_SCORE_ADJUST.to_string())
    {
        tracing::debug!(pid, error = %error, "cannot raise the backend's oom_score_adj");
    }
}

/// Forwards a child's output, line by line, as log lines naming their source.
pub(crate) async fn forward(reader: impl AsyncRead + Unpin, stream: &'static str, pid: u32) {
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let (done, used) = {
            let available = match reader.fill_buf().await {
                Ok(available) => available,
                Err(_) => break,
            };
            if available.is_empty() {
                break;
            }
            match available.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let room = MAX_LINE_BYTES.saturating_sub(line.len());
                    line.extend_from_slice(&available[..end.min(room)]);
                    (true, end + 1)
                }
                None => {
                    let room = MAX_LINE_BYTES.saturating_sub(line.len());
                    line.extend_from_slice(&available[..available.len().min(room)]);
                    (false, available.len())
                }
            }
        };
        reader.consume(used);
        if done {
            emit(&line, stream, pid);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line, stream, pid);
    }
}

fn emit(line: &[u8], stream: &'static str, pid: u32) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if !text.is_empty() {
        tracing::info!(source = "llama-server", stream, pid, "{text}");
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; always reaps the child.
pub(crate) async fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Ok(Ok(status)) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
            return Some(status);
        }
        tracing::warn!(
            pid = pid.as_raw_pid(),
            grace_ms = STOP_GRACE.as_millis() as u64,
            "llama-server ignored SIGTERM; killing it"
        );
    }
    let _ = child.kill().await;
    child.wait().await.ok()
}
