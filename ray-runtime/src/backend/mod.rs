//! Backend processes: the `llama-server` command line generated from a launch profile, and
//! the supervisor that runs it for a model (`launchProfile.supervise`), restarts it with
//! backoff and reports its state to the model's readiness.

pub mod child;
mod launch;
pub mod ondemand;
pub(crate) mod process;
mod run;
pub mod slots;
pub mod supervise;

pub use launch::{LLAMA_OOM_SCORE_ADJUST, LlamaCommand, llama_command};
pub use process::BackendProcess;
pub use supervise::Supervisor;

use std::time::Duration;

use crate::runtime::Runtime;

/// The supervisors of the models whose launch profile sets `supervise`, or, under the
/// `lifecycle` section, the lifecycle that loads them on demand.
#[derive(Debug, Default)]
pub struct Backends {
    supervisors: Vec<Supervisor>,
    lifecycle: Option<(
        crate::lifecycle::LifecycleShell,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Backends {
    /// How many backend processes are supervised (or managed by the lifecycle).
    pub fn len(&self) -> usize {
        self.supervisors.len() + self.lifecycle.as_ref().map_or(0, |(s, _)| s.ids().len())
    }

    /// Whether no backend process is supervised.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every child (SIGTERM, SIGKILL after [`supervise::STOP_GRACE`]) and waits for them.
    pub async fn shutdown(self) {
        if let Some((shell, tick)) = self.lifecycle {
            tick.abort();
            shell.shutdown().await;
        }
        for supervisor in self.supervisors {
            supervisor.shutdown().await;
        }
    }
}

impl Runtime {
    /// The gateway shuts down: every model's scheduler refuses its waiting requests now and
    /// any new one (`503 shutting_down`), and the lifecycle loads no model any more and
    /// refuses the requests waiting for one; the job queue starts no new attempt (a job
    /// refused this way keeps its attempt and runs after the restart). Requests in progress
    /// keep their permits and processes until they end. Call it when the drain begins, so
    /// that work which has not started is answered at once instead of being cut when the
    /// drain ends.
    pub fn close_for_shutdown(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(jobs) = &self.inner.jobs {
            jobs.begin_stop();
        }
        for entry in self.live().registry.entries() {
            entry.scheduler.close_and_refuse_waiting();
        }
        if let Some(managed) = &self.inner.managed {
            managed.shell.close();
        }
    }

    /// Starts a supervisor for every model whose llama.cpp launch profile sets `supervise`.
    /// Call it from inside a Tokio runtime, after the listener is bound; stop them with
    /// [`Backends::shutdown`] after the drain (requests in progress need them until then).
    pub fn start_backends(&self) -> Backends {
        self.start_backends_in(None)
    }

    /// [`Runtime::start_backends`], recording each child's pid in `state_dir` (`children/`)
    /// after ending any child an earlier run recorded there and left running.
    pub fn start_backends_in(&self, state_dir: Option<&std::path::Path>) -> Backends {
        if let Some(dir) = state_dir {
            let ended = child::end_earlier_children(dir);
            if !ended.is_empty() {
                tracing::warn!(
                    pids = ?ended,
                    "ended llama-server children an earlier gateway left running"
                );
            }
        }
        // Under the `lifecycle` section, managed models load on demand: their driver starts
        // with the shell, which loads the pinned ones that fit, and a tick lets the clock act
        // (deadlines, drains, idle unloads).
        let lifecycle = self.inner.managed.as_ref().map(|managed| {
            let shell = managed.shell.clone();
            shell.start();
            let ticking = shell.clone();
            let tick = tokio::spawn(async move {
                let mut interval = tokio::time::interval(crate::lifecycle::LIFECYCLE_TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    ticking.tick();
                }
            });
            (shell, tick)
        });
        let mut supervisors = Vec::new();
        for model in self.live().registry.entries() {
            if model.lifecycle.is_some() {
                continue;
            }
            let Some(launch) = model
                .config
                .adapter
                .launch_profile()
                .filter(|launch| launch.supervise)
            else {
                continue;
            };
            let api_key_env = model
                .config
                .adapter
                .http()
                .and_then(|h| h.api_key_env.map(String::from));
            supervisors.push(supervise::spawn(
                self.clone(),
                model.id.clone(),
                launch.clone(),
                api_key_env,
                state_dir.map(std::path::Path::to_path_buf),
            ));
        }
        Backends {
            supervisors,
            lifecycle,
        }
    }
}

impl Runtime {
    /// The supervisor started the backend process `pid` of `model` (after `restarts`
    /// restarts): its readiness says `provider_warming` until the process answers.
    pub fn backend_process_starting(&self, model: &str, pid: u32, restarts: u32) {
        if let Some(entry) = self.live().registry.get(model) {
            entry
                .health
                .set_process(BackendProcess::Starting { pid, restarts });
        }
    }

    /// The started process of `model` accepts connections: probe it now rather than at the
    /// next tick.
    pub fn backend_process_listening(&self, model: &str) {
        if let Some(entry) = self.live().registry.get(model) {
            entry.health.probe_now.notify_one();
        }
    }

    /// The backend process of `model` ended (`exit` says how) and starts again in
    /// `restart_in`: its readiness says `provider_unavailable` meanwhile.
    pub fn backend_process_exited(
        &self,
        model: &str,
        exit: String,
        restarts: u32,
        restart_in: Duration,
    ) {
        if let Some(entry) = self.live().registry.get(model) {
            entry.health.set_process(BackendProcess::Exited {
                exit,
                restarts,
                restart_in_ms: restart_in.as_millis() as u64,
            });
        }
    }

    /// The backend process of `model` was stopped for good (shutdown).
    pub fn backend_process_stopped(&self, model: &str, restarts: u32) {
        if let Some(entry) = self.live().registry.get(model) {
            entry
                .health
                .set_process(BackendProcess::Stopped { restarts });
        }
    }

    /// The supervised process's state of `model`, when a supervisor runs it.
    pub fn backend_process(&self, model: &str) -> Option<BackendProcess> {
        self.live().registry.get(model)?.health.process()
    }
}
