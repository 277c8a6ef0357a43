//! Running a `llama-server` child, for the supervisor and the lifecycle's driver alike: its
//! command (tied to the gateway, without the gateway's settings), its output forwarded into
//! the log, its `oom_score_adj`, and its end (SIGTERM, then SIGKILL after [`STOP_GRACE`]).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
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

/// Another process listening on `launch`'s fixed port, said as the reason a load fails: a
/// child started there could not bind it, and whatever answers there would be taken for the
/// model. `None` for a port Ray picks (`0`), or when the port is free (or cannot be checked:
/// the child then says why it cannot bind).
pub(crate) fn port_taken(launch: &LaunchProfile) -> Option<String> {
    if launch.port == 0 {
        return None;
    }
    let host = launch.host.trim_start_matches('[').trim_end_matches(']');
    match std::net::TcpListener::bind((host, launch.port)) {
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Some(format!(
            "port {} on {host} is already in use by another process, which would be taken for \
             the model: stop it (a llama-server started by hand, or left by an earlier gateway?) \
             or set launchProfile.port to a free port (0 lets Ray pick one)",
            launch.port
        )),
        _ => None,
    }
}

/// What a child said before it ended, for the reason of a failed load: its first error line
/// (llama-server's `E` lines; the first is the most precise) or else its last line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<TailLines>>);

#[derive(Debug, Default)]
pub(crate) struct TailLines {
    first_error: Option<String>,
    /// Whether `first_error` is an `E` line (it is then kept).
    first_is_e_line: bool,
    last: Option<String>,
}

/// Longest line a [`Tail`] keeps, in chars.
const TAIL_LINE_CHARS: usize = 240;

impl Tail {
    fn note(&self, line: &str) {
        // llama-server's lines start with a timestamp (`0.00.004.900`) and a level letter.
        let text = match line.split_once(' ') {
            Some((stamp, rest)) if stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.') => rest,
            _ => line,
        };
        let kept: String = text.chars().take(TAIL_LINE_CHARS).collect();
        let mut lines = self.0.lock();
        // llama-server's own error lines (`E `) first; a line that only mentions an error
        // (a warning about a failed optional backend, say) only while there is none.
        if text.starts_with("E ") && !lines.first_is_e_line {
            lines.first_error = Some(kept.trim_start_matches("E ").trim().to_string());
            lines.first_is_e_line = true;
        } else if lines.first_error.is_none() {
            let lower = text.to_ascii_lowercase();
            if lower.contains("error") || lower.contains("failed") {
                lines.first_error = Some(kept.trim().to_string());
            }
        }
        lines.last = Some(kept);
    }

    /// `reason`, followed by what the child said, when it said anything.
    pub(crate) fn explain(&self, reason: String) -> String {
        let lines = self.0.lock();
        match lines.first_error.as_ref().or(lines.last.as_ref()) {
            Some(said) => format!("{reason}; it said: {said}"),
            None => reason,
        }
    }
}

/// Forwards a child's output, line by line, as log lines naming their source; `tail` keeps
/// what [`Tail::explain`] needs.
pub(crate) async fn forward(
    reader: impl AsyncRead + Unpin,
    stream: &'static str,
    pid: u32,
    tail: Option<Tail>,
) {
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
            emit(&line, stream, pid, tail.as_ref());
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line, stream, pid, tail.as_ref());
    }
}

fn emit(line: &[u8], stream: &'static str, pid: u32, tail: Option<&Tail>) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if !text.is_empty() {
        tracing::info!(source = "llama-server", stream, pid, "{text}");
        if let Some(tail) = tail {
            tail.note(text);
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_port_another_process_listens_on_is_named_and_a_free_one_is_not() {
        let mut launch = crate::backend::slots::tests::sub1b_launch();
        launch.host = "127.0.0.1".into();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        launch.port = held.local_addr().unwrap().port();
        let reason = port_taken(&launch).expect("the port is held");
        assert!(
            reason.starts_with(&format!(
                "port {} on 127.0.0.1 is already in use by another process",
                launch.port
            )),
            "{reason}"
        );
        drop(held);
        assert_eq!(port_taken(&launch), None);
        launch.port = 0;
        assert_eq!(port_taken(&launch), None);
    }

    #[test]
    fn a_tail_names_the_first_error_line_else_the_last_line() {
        let tail = Tail::default();
        assert_eq!(tail.explain("exit status 1".into()), "exit status 1");
        tail.note("0.00.001.123 I srv  llama_server: initializing ...");
        assert_eq!(
            tail.explain("exit status 1".into()),
            "exit status 1; it said: I srv  llama_server: initializing ..."
        );
        tail.note("0.00.002.000 W ggml_vulkan: failed to initialize, using the CPU");
        tail.note("0.00.004.900 E gguf_init_from_file: failed to open GGUF file 'x.gguf'");
        tail.note("0.00.005.566 E srv  llama_server: exiting due to model loading error");
        assert_eq!(
            tail.explain("exit status 1".into()),
            "exit status 1; it said: gguf_init_from_file: failed to open GGUF file 'x.gguf'"
        );
        // A line without llama-server's layout, and a long one, kept within bounds.
        let other = Tail::default();
        other.note(&format!("fatal error: {}", "x".repeat(1_000)));
        let said = other.explain("killed by signal 6".into());
        assert!(
            said.starts_with("killed by signal 6; it said: fatal error: xxx"),
            "{said}"
        );
        assert!(said.len() < 300, "{said}");
    }
}
