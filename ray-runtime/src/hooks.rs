//! Event hooks (`hooks` in the config): the events an operator should know about, each one
//! JSON object with a stable shape (`type`, `id`, `time`, and the event's fields), handed to a
//! command on its standard input or posted to a URL (signed like job callbacks, under the same
//! address rules).
//!
//! Hooks never slow a request down: emitting an event puts it in a bounded queue
//! ([`HOOK_QUEUE`] events) and returns; when the queue is full the event is counted as dropped,
//! and a `hooks_dropped` event with the count follows the next event that finds room (a
//! `hooks_dropped` that finds none carries its count over to the next). One background task
//! runs the hooks, at most [`HOOK_CONCURRENCY`] runs at once, each within its `timeoutMs` (a
//! command that outlives it is killed); a URL is tried up to [`URL_ATTEMPTS`] times with
//! backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ray_core::config::HookConfig;
use ray_core::time::now_rfc3339;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};

use crate::ids::IdSource;
use crate::jobs::CallbackClient;
use crate::metrics::{MetricKind, MetricsSnapshot, Sample};

/// Events waiting for their hooks, at most.
pub const HOOK_QUEUE: usize = 256;
/// Hook runs at once, at most.
pub const HOOK_CONCURRENCY: usize = 2;
/// Delivery attempts of one event to one URL.
pub const URL_ATTEMPTS: u32 = 3;

/// One event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    kind: &'static str,
    body: Value,
}

/// Counters of the hooks.
#[derive(Debug, Default)]
struct Stats {
    emitted: AtomicU64,
    dropped: AtomicU64,
    runs: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
}

/// The runtime's hooks: the queue's sending side and the counters. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Hooks {
    shared: Arc<Shared>,
}

struct Shared {
    hooks: Vec<HookConfig>,
    sender: mpsc::Sender<Event>,
    receiver: parking_lot::Mutex<Option<mpsc::Receiver<Event>>>,
    urls: Option<CallbackClient>,
    ids: IdSource,
    stats: Stats,
    /// Drops not reported yet by a `hooks_dropped` event.
    unreported: AtomicU64,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("hooks", &self.shared.hooks.len())
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// The hooks of a config; `urls` posts to URL hooks (signed, with the callback rules).
    pub(crate) fn new(hooks: Vec<HookConfig>, urls: Option<CallbackClient>) -> Hooks {
        let (sender, receiver) = mpsc::channel(HOOK_QUEUE);
        Hooks {
            shared: Arc::new(Shared {
                hooks,
                sender,
                receiver: parking_lot::Mutex::new(Some(receiver)),
                urls,
                ids: IdSource::default(),
                stats: Stats::default(),
                unreported: AtomicU64::new(0),
            }),
        }
    }

    /// Whether any hook is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.hooks.is_empty()
    }

    /// Queues an event of type `kind` with `fields`; never waits. Without hooks it costs
    /// nothing; with a full queue the event is counted as dropped.
    pub(crate) fn emit(&self, kind: &'static str, fields: Map<String, Value>) {
        if self.is_empty() || !self.wants(kind) {
            return;
        }
        let shared = &self.shared;
        let mut body = Map::with_capacity(fields.len() + 3);
        body.insert("type".into(), kind.into());
        body.insert("id".into(), shared.ids.next("evt_").into());
        body.insert("time".into(), now_rfc3339().into());
        body.extend(fields);
        let event = Event {
            kind,
            body: Value::Object(body),
        };
        match shared.sender.try_send(event) {
            Ok(()) => {
                shared.stats.emitted.fetch_add(1, Ordering::Relaxed);
                let unreported = shared.unreported.swap(0, Ordering::Relaxed);
                if unreported > 0 {
                    let mut fields = Map::new();
                    fields.insert("dropped".into(), unreported.into());
                    self.emit("hooks_dropped", fields);
                }
            }
            Err(error) => {
                shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                // A `hooks_dropped` event that finds no room hands its count to the next one,
                // so no drop goes unreported.
                let unreported = if kind == "hooks_dropped" {
                    error.into_inner().body["dropped"].as_u64().unwrap_or(0)
                } else {
                    1
                };
                shared.unreported.fetch_add(unreported, Ordering::Relaxed);
            }
        }
    }

    fn wants(&self, kind: &str) -> bool {
        self.shared
            .hooks
            .iter()
            .any(|h| h.events.is_empty() || h.events.iter().any(|e| e == kind))
    }

    /// Runs the hooks for every queued event until the runtime is dropped (started once, by
    /// [`Runtime::start`](crate::Runtime::start)).
    pub(crate) async fn run(&self) {
        let Some(mut receiver) = self.shared.receiver.lock().take() else {
            return;
        };
        let slots = Arc::new(Semaphore::new(HOOK_CONCURRENCY));
        while let Some(event) = receiver.recv().await {
            let event = Arc::new(event);
            for (index, hook) in self.shared.hooks.iter().enumerate() {
                if !(hook.events.is_empty() || hook.events.iter().any(|e| e == event.kind)) {
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let hooks = self.clone();
                let event = event.clone();
                tokio::spawn(async move {
                    hooks.run_one(index, &event).await;
                    drop(slot);
                });
            }
        }
    }

    async fn run_one(&self, index: usize, event: &Event) {
        let hook = &self.shared.hooks[index];
        let stats = &self.shared.stats;
        stats.runs.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_millis(hook.timeout_ms);
        let body = serde_json::to_vec(&event.body).unwrap_or_default();
        let outcome = match (&hook.command, &hook.url) {
            (Some(command), _) => run_command(command, &body, timeout).await,
            (None, Some(url)) => self.post(url, event, body, timeout).await,
            (None, None) => Ok(()),
        };
        if let Err(failure) = outcome {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            if matches!(failure, Failure::Timeout) {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(hook = index, event = event.kind, error = %failure, "hook failed");
        }
    }

    async fn post(
        &self,
        url: &str,
        event: &Event,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let Some(client) = &self.shared.urls else {
            return Err(Failure::Other("no HTTP client for URL hooks".into()));
        };
        let id = event.body["id"].as_str().unwrap_or_default();
        let mut last = Failure::Other("not sent".into());
        for attempt in 1..=URL_ATTEMPTS {
            let sent = tokio::time::timeout(
                timeout,
                client.post_event(url, id, event.kind, attempt, body.clone()),
            )
            .await;
            match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) => last = Failure::Other(why),
                Err(_) => last = Failure::Timeout,
            }
            if attempt < URL_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
        Err(last)
    }

    /// The `ray_hook_*` families.
    pub(crate) fn metrics(&self) -> MetricsSnapshot {
        let stats = &self.shared.stats;
        let mut m = MetricsSnapshot::default();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        m.gauge(
            "ray_hooks_configured",
            "Hooks in the config.",
            None,
            self.shared.hooks.len() as f64,
        );
        m.labelled(
            "ray_hook_events_total",
            "Events for the hooks: queued, or dropped because the queue was full.",
            MetricKind::Counter,
            [("queued", &stats.emitted), ("dropped", &stats.dropped)]
                .into_iter()
                .map(|(outcome, count)| Sample {
                    suffix: "",
                    labels: vec![("outcome", outcome.into())],
                    value: load(count),
                })
                .collect(),
        );
        m.counter(
            "ray_hook_runs_total",
            "Hook runs (a command run, or the delivery of one event to a URL).",
            None,
            load(&stats.runs),
        );
        m.counter(
            "ray_hook_failures_total",
            "Hook runs that failed (non-zero exit, refused or failed delivery, timeout).",
            None,
            load(&stats.failures),
        );
        m.counter(
            "ray_hook_timeouts_total",
            "Hook runs that took longer than their timeoutMs (commands are killed).",
            None,
            load(&stats.timeouts),
        );
        m
    }
}

/// Why a hook run failed.
#[derive(Debug)]
enum Failure {
    Timeout,
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out (a command is killed)"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// Runs `command` with `body` on its standard input; killed, with every process it started,
/// when it outlives `timeout` (it runs in a process group of its own).
async fn run_command(command: &[String], body: &[u8], timeout: Duration) -> Result<(), Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure::Other("empty command".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Other(format!("cannot start {program}: {e}")))?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    // Until the command is reaped, dropping this future (a shutdown that stops the hook's
    // task) kills the whole group too: `kill_on_drop` alone reaches only the leader.
    let mut guard = GroupGuard(group);
    let stdin = child.stdin.take();
    // The event and its newline in one write, so a hook that appends its input to a shared
    // file (`cat >> events.jsonl`) is not cut between the two by another run's event.
    let mut line = Vec::with_capacity(body.len() + 1);
    line.extend_from_slice(body);
    line.push(b'\n');
    let run = async {
        if let Some(mut stdin) = stdin {
            // A hook that does not read its input is its own business.
            let _ = stdin.write_all(&line).await;
        }
        child.wait().await
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    if matches!(outcome, Ok(Ok(_))) {
        // Reaped: its process group id may be reused from now on.
        guard.0 = None;
    }
    match outcome {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Failure::Other(format!("{program} exited with {status}"))),
        Ok(Err(error)) => Err(Failure::Other(format!("{program}: {error}"))),
        // The whole group: a script's own children (a `curl` with no timeout, a `sleep`)
        // would outlive it. Dropping the child reaps it.
        Err(_) => {
            drop(guard);
            Err(Failure::Timeout)
        }
    }
}

/// Kills a hook command's process group when dropped, while it holds one.
struct GroupGuard(Option<rustix::process::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod command_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The hook's grandchild `pid` got SIGKILL with its group: gone, or a zombie until init
    /// reaps it, within two seconds.
    async fn assert_gone(pid: i32) {
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            if state.is_none_or(|s| s.split_whitespace().nth(2) == Some("Z")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the hook's child {pid} still runs");
    }

    #[tokio::test]
    async fn a_command_that_outlives_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let outcome = run_command(&command, b"{}", Duration::from_millis(300)).await;
        assert!(matches!(outcome, Err(Failure::Timeout)), "{outcome:?}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_gone(pid).await;
    }

    /// A hook whose task is stopped (its future dropped, as at shutdown) takes its whole
    /// process group with it, not only the shell it started.
    #[tokio::test]
    async fn a_command_whose_future_is_dropped_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let task =
            tokio::spawn(
                async move { run_command(&command, b"{}", Duration::from_secs(30)).await },
            );
        let mut pid = None;
        for _ in 0..250 {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok());
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = pid.expect("the hook started its child");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_gone(pid).await;
    }
}
