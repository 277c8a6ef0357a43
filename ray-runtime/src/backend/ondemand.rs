//! The lifecycle's [`ModelDriver`] for `llama-server` children: a process is started when the
//! lifecycle asks for a load and stopped when it asks for an unload, never restarted on its
//! own (a child that dies makes its model `failed`, and the next request loads it again).
//!
//! A load is done when the child answers `GET /health` with 200 (model loaded and warmed up);
//! its RSS then is the measured footprint, kept in the state directory with the load time. The
//! children are tied to the gateway ([`super::child`]) and recorded in pid files like the
//! supervisor's.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::config::LaunchProfile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::child;
use super::launch::llama_command;
use super::run::{
    START_TIMEOUT, Tail, base_url, command, describe, forward, port_taken, raise_oom_score,
    terminate,
};
use super::slots::{SlotFiles, SlotReport};
use crate::footprint::{Measured, MeasuredFootprints, footprint_key};
use crate::lifecycle::{BoxFuture, LifecycleShell, ModelDriver};

enum Order {
    Load,
    Unload,
    /// A config reload changed the model: the next process starts with this definition.
    Replace(Box<ManagedProcess>),
    /// Stop the process, if any, and end the task (the gateway shuts down).
    Stop,
}

/// One managed model's process as the driver runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedProcess {
    /// The model's id (for logs, pid and footprint files).
    pub id: String,
    /// Its launch profile.
    pub launch: LaunchProfile,
    /// The environment variable whose value goes to the child as `LLAMA_API_KEY`.
    pub api_key_env: Option<String>,
}

/// A running process: its id and where it listens.
type Running = (u32, String);

/// A model whose task has not started, with its order queue.
type Queued = (ManagedProcess, mpsc::UnboundedReceiver<Order>);

/// Starts and stops `llama-server` children for the lifecycle. Build it, build the
/// [`LifecycleShell`] with it, then hand the shell back with [`ProcessDriver::attach`]; the
/// shell's `start` starts the driver's tasks (one per model).
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    orders: Arc<Mutex<Vec<mpsc::UnboundedSender<Order>>>>,
    shell: Arc<OnceLock<LifecycleShell>>,
    /// The models and their order queues until [`ModelDriver::start`] spawns their tasks
    /// (`None` once started).
    pending: Arc<Mutex<Option<Vec<Queued>>>>,
    state_dir: Option<PathBuf>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Definitions a reload gave, by index, until the lifecycle says they apply.
    staged: Arc<Mutex<std::collections::HashMap<usize, ManagedProcess>>>,
    /// Each model's running process (its id and base URL), by index.
    pids: Arc<Mutex<Vec<Option<Running>>>>,
}

impl ProcessDriver {
    /// A driver for `models` (in the lifecycle's order). Needs no async context: orders given
    /// before [`ModelDriver::start`] wait in their queues. Pid files and measured footprints go
    /// to `state_dir` when given.
    pub fn new(models: Vec<ManagedProcess>, state_dir: Option<PathBuf>) -> ProcessDriver {
        let mut orders = Vec::new();
        let mut queues = Vec::new();
        for model in models {
            let (send, receive) = mpsc::unbounded_channel();
            orders.push(send);
            queues.push((model, receive));
        }
        let pids = Arc::new(Mutex::new(vec![None; orders.len()]));
        ProcessDriver {
            pids,
            staged: Arc::default(),
            orders: Arc::new(Mutex::new(orders)),
            shell: Arc::new(OnceLock::new()),
            pending: Arc::new(Mutex::new(Some(queues))),
            state_dir,
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Adds a model (a config reload added it) at the next index, which is returned: the
    /// lifecycle's [`LifecycleShell::add`] gives it the same one. Its task starts at once when
    /// the driver runs (from inside a Tokio runtime), else with the others.
    pub fn add(&self, model: ManagedProcess) -> usize {
        let (send, receive) = mpsc::unbounded_channel();
        let mut orders = self.orders.lock();
        let index = orders.len();
        orders.push(send);
        drop(orders);
        self.pids.lock().resize(index + 1, None);
        let mut pending = self.pending.lock();
        match pending.as_mut() {
            Some(queues) => queues.push((model, receive)),
            None => {
                drop(pending);
                self.spawn_task(index, model, receive);
            }
        }
        index
    }

    /// Stages `model` for the model at `index` (a config reload changed it): its process
    /// starts with it once the lifecycle says the new definition applies
    /// ([`ModelDriver::reconfigured`], when no process of it runs). A process running now is
    /// not touched.
    pub fn replace(&self, index: usize, model: ManagedProcess) {
        self.staged.lock().insert(index, model);
    }

    /// The process id of the model at `index` while its process runs (loading, serving or
    /// stopping).
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.pids.lock().get(index)?.as_ref().map(|(pid, _)| *pid)
    }

    /// Where the process of the model at `index` listens while it runs (`http://host:port`,
    /// with the port Ray picked when its launch profile says `port: 0`).
    pub fn base_url(&self, index: usize) -> Option<String> {
        self.pids
            .lock()
            .get(index)?
            .as_ref()
            .map(|(_, url)| url.clone())
    }

    fn spawn_task(
        &self,
        index: usize,
        model: ManagedProcess,
        receive: mpsc::UnboundedReceiver<Order>,
    ) {
        let pids = self.pids.clone();
        let set_pid = move |running: Option<Running>| {
            if let Some(slot) = pids.lock().get_mut(index) {
                *slot = running;
            }
        };
        self.tasks.lock().push(tokio::spawn(run(
            index,
            model,
            self.state_dir.clone(),
            self.shell.clone(),
            receive,
            Box::new(set_pid),
        )));
    }

    fn order(&self, model: usize, order: Order) {
        if let Some(orders) = self.orders.lock().get(model) {
            let _ = orders.send(order);
        }
    }

    /// [`ProcessDriver::new`], its tasks started at once (from inside a Tokio runtime).
    pub fn spawn(models: Vec<ManagedProcess>, state_dir: Option<PathBuf>) -> ProcessDriver {
        let driver = ProcessDriver::new(models, state_dir);
        driver.start();
        driver
    }

    /// The shell the driver reports to.
    pub fn attach(&self, shell: LifecycleShell) {
        let _ = self.shell.set(shell);
    }
}

impl ModelDriver for ProcessDriver {
    fn load(&self, model: usize) {
        self.order(model, Order::Load);
    }

    fn unload(&self, model: usize) {
        self.order(model, Order::Unload);
    }

    fn reconfigured(&self, model: usize) {
        if let Some(process) = self.staged.lock().remove(&model) {
            self.order(model, Order::Replace(Box::new(process)));
        }
    }

    fn start(&self) {
        let Some(queues) = self.pending.lock().take() else {
            return;
        };
        for (index, (model, receive)) in queues.into_iter().enumerate() {
            self.spawn_task(index, model, receive);
        }
    }

    fn stop(&self) -> BoxFuture {
        for orders in self.orders.lock().iter() {
            let _ = orders.send(Order::Stop);
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        Box::pin(async move {
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

/// `model` as its next process runs: with a free port on its host when its launch profile
/// says `port: 0` (Ray picks one at each load), else as it is.
fn with_port(model: &ManagedProcess) -> Result<ManagedProcess, String> {
    let mut model = model.clone();
    if model.launch.port == 0 {
        let host = model
            .launch
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let listener = std::net::TcpListener::bind((host, 0))
            .map_err(|error| format!("cannot find a free port on {host}: {error}"))?;
        model.launch.port = listener
            .local_addr()
            .map_err(|error| format!("cannot find a free port on {host}: {error}"))?
            .port();
    }
    Ok(model)
}

/// Whether the child answers `GET /health` with 200 before `until`.
async fn healthy(launch: &LaunchProfile, until: Instant) -> bool {
    let url = format!("{}/health", base_url(launch));
    let client = reqwest::Client::new();
    while Instant::now() < until {
        let answered = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if answered {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Saves the running child's slots when the model has a `slotSavePath`.
async fn save_slots(model: &ManagedProcess) {
    if let Some(slots) = SlotFiles::of(&model.id, &model.launch) {
        let started = Instant::now();
        let saved = slots.save(&model.launch).await;
        log_slots(&model.id, "saved", &saved, started.elapsed());
    }
}

fn log_slots(model: &str, done: &str, report: &SlotReport, took: Duration) {
    let ms = took.as_millis() as u64;
    match &report.error {
        None => tracing::info!(
            model,
            slots = report.slots,
            tokens = report.tokens,
            bytes = report.bytes,
            ms,
            "llama-server slots {done}"
        ),
        Some(error) => tracing::warn!(
            model,
            slots = report.slots,
            tokens = report.tokens,
            failed = report.failed,
            error = %error,
            ms,
            "llama-server slots {done} in part; the prompt cache of the others is lost"
        ),
    }
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    crate::pressure::parse_vm_rss(&status).map(|bytes| bytes.div_ceil(1 << 20))
}

async fn run(
    index: usize,
    mut model: ManagedProcess,
    state_dir: Option<PathBuf>,
    shell: Arc<OnceLock<LifecycleShell>>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    set_pid: Box<dyn Fn(Option<Running>) + Send>,
) {
    let report = |f: &dyn Fn(&LifecycleShell)| {
        if let Some(shell) = shell.get() {
            f(shell);
        }
    };
    let pid_file = state_dir
        .as_deref()
        .map(|dir| child::pid_file(dir, &model.id));
    // A definition a reload gave while a process ran: it applies once that process ends.
    let mut next: Option<ManagedProcess> = None;
    while let Some(order) = orders.recv().await {
        if let Some(replaced) = next.take() {
            model = replaced;
        }
        match order {
            Order::Load => {}
            // Nothing runs: the unload is done.
            Order::Unload => {
                report(&|s| s.unloaded(index));
                continue;
            }
            Order::Replace(replaced) => {
                model = *replaced;
                continue;
            }
            Order::Stop => return,
        }
        let started = Instant::now();
        // A port Ray picks (`port: 0`): a free one, for this process only.
        let model = match with_port(&model) {
            Ok(model) => model,
            Err(reason) => {
                report(&|s| s.load_failed(index, reason.clone()));
                continue;
            }
        };
        if let Some(reason) = port_taken(&model.launch) {
            report(&|s| s.load_failed(index, reason.clone()));
            continue;
        }
        let program = llama_command(&model.launch).program;
        if let Err(reason) = super::slots::prepare_dir(&model.launch) {
            report(&|s| s.load_failed(index, reason.clone()));
            continue;
        }
        let spawned = match child::check_program(&program) {
            Ok(()) => child::spawn_tied(command(&model.launch, model.api_key_env.as_deref())).await,
            Err(error) => Err(error),
        };
        let mut process = match spawned {
            Ok(process) => process,
            Err(error) => {
                let reason = format!("cannot start {program}: {error}");
                report(&|s| s.load_failed(index, reason.clone()));
                continue;
            }
        };
        let pid = process.id().unwrap_or(0);
        set_pid(Some((pid, base_url(&model.launch))));
        raise_oom_score(pid);
        if let Some(path) = &pid_file {
            let spec = llama_command(&model.launch);
            let mut cmdline = vec![spec.program];
            cmdline.extend(spec.args);
            let _ = child::write_pid_file(path, &child::PidRecord { pid, cmdline });
        }
        let tail = Tail::default();
        if let Some(stdout) = process.stdout.take() {
            tokio::spawn(forward(stdout, "stdout", pid, Some(tail.clone())));
        }
        let mut stderr = process
            .stderr
            .take()
            .map(|stderr| tokio::spawn(forward(stderr, "stderr", pid, Some(tail.clone()))));
        tracing::info!(model = %model.id, pid, "llama-server started for a load");
        // Loading: until healthy, the child dies, or the gateway shuts down.
        let health = healthy(&model.launch, started + START_TIMEOUT);
        tokio::pin!(health);
        let loaded = loop {
            tokio::select! {
                up = &mut health => break Some(up),
                status = process.wait() => {
                    let exit = status.map_or_else(|e| format!("wait failed: {e}"), describe);
                    // The pipe closes with the process: let its last lines arrive (a grandchild
                    // holding it open must not hold the load up).
                    if let Some(stderr) = &mut stderr {
                        let _ = tokio::time::timeout(Duration::from_millis(500), stderr).await;
                    }
                    let reason = tail.explain(format!("llama-server exited while loading: {exit}"));
                    report(&|s| s.load_failed(index, reason.clone()));
                    break None;
                }
                order = orders.recv() => match order {
                    Some(Order::Stop) | None => {
                        let _ = terminate(&mut process).await;
                        set_pid(None);
                        if let Some(path) = &pid_file {
                            let _ = std::fs::remove_file(path);
                        }
                        return;
                    }
                    Some(Order::Replace(replaced)) => next = Some(*replaced),
                    // The lifecycle never unloads a model while it loads.
                    Some(Order::Load | Order::Unload) => {}
                },
            }
        };
        let Some(loaded) = loaded else {
            set_pid(None);
            if let Some(path) = &pid_file {
                let _ = std::fs::remove_file(path);
            }
            continue;
        };
        if !loaded {
            let _ = terminate(&mut process).await;
            report(&|s| {
                s.load_failed(
                    index,
                    format!("no healthy answer within {} s", START_TIMEOUT.as_secs()),
                )
            });
            set_pid(None);
            if let Some(path) = &pid_file {
                let _ = std::fs::remove_file(path);
            }
            continue;
        }
        // Healthy, but the process that answered must be the one just started.
        if let Ok(Some(status)) = process.try_wait() {
            let reason = tail.explain(format!(
                "llama-server exited while loading ({}), though something answered on its port",
                describe(status)
            ));
            report(&|s| s.load_failed(index, reason.clone()));
            set_pid(None);
            if let Some(path) = &pid_file {
                let _ = std::fs::remove_file(path);
            }
            continue;
        }
        let took = started.elapsed();
        let measured = rss_mib(pid);
        tracing::info!(
            model = %model.id,
            pid,
            load_ms = took.as_millis() as u64,
            rss_mib = measured,
            "llama-server loaded; footprint measured"
        );
        if let (Some(dir), Some(load_mib)) = (&state_dir, measured) {
            let dir = dir.clone();
            let id = model.id.clone();
            let kept = Measured {
                key: footprint_key(&model.launch),
                load_mib,
                load_ms: took.as_millis() as u64,
            };
            let _ = tokio::task::spawn_blocking(move || {
                MeasuredFootprints::open(&dir).record(&id, kept)
            })
            .await;
        }
        if let Some(slots) = SlotFiles::of(&model.id, &model.launch) {
            let started = Instant::now();
            let restored = slots.restore(&model.launch).await;
            if restored != SlotReport::default() {
                log_slots(&model.id, "restored", &restored, started.elapsed());
            }
        }
        report(&|s| s.loaded(index, measured));
        // Running: until it dies or an unload is ordered.
        loop {
            tokio::select! {
                status = process.wait() => {
                    let exit = status.map_or_else(|e| format!("wait failed: {e}"), describe);
                    tracing::warn!(model = %model.id, pid, exit = %exit, "llama-server exited");
                    report(&|s| s.exited(index, exit.clone()));
                    break;
                }
                order = orders.recv() => match order {
                    Some(Order::Stop) => {
                        save_slots(&model).await;
                        let _ = terminate(&mut process).await;
                        tracing::info!(model = %model.id, pid, "llama-server stopped: the gateway shuts down");
                        set_pid(None);
                        if let Some(path) = &pid_file {
                            let _ = std::fs::remove_file(path);
                        }
                        return;
                    }
                    Some(Order::Unload) | None => {
                        save_slots(&model).await;
                        let status = terminate(&mut process).await;
                        tracing::info!(
                            model = %model.id,
                            pid,
                            exit = %status.map_or_else(|| "unknown".to_string(), describe),
                            "llama-server stopped for an unload"
                        );
                        report(&|s| s.unloaded(index));
                        break;
                    }
                    Some(Order::Replace(replaced)) => next = Some(*replaced),
                    Some(Order::Load) => {}
                },
            }
        }
        set_pid(None);
        if let Some(path) = &pid_file {
            let _ = std::fs::remove_file(path);
        }
    }
}
