//! A backend process run by a supervisor (`ray-server` with `launchProfile.supervise`), as
//! readiness sees it: while the process starts, the backend is `warming` (requests are refused
//! with `provider_warming`), once it exits it is `unavailable` until the next start answers.
//!
//! The supervisor reports what it does to the process; the runtime's own probe decides when a
//! started process counts as running (its first answer), and is woken at once by each report
//! so readiness follows within milliseconds instead of the monitor's two seconds.

use std::time::Duration;

use ray_core::wire::ProviderStatus;
use serde::Serialize;

use crate::runtime::Runtime;

/// Where a supervised backend process stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum BackendProcess {
    /// Started, and not answering yet.
    #[serde(rename_all = "camelCase")]
    Starting {
        /// Its process id.
        pid: u32,
        /// Restarts so far.
        restarts: u32,
    },
    /// Answering the runtime's probe.
    #[serde(rename_all = "camelCase")]
    Running {
        /// Its process id.
        pid: u32,
        /// Restarts so far.
        restarts: u32,
    },
    /// Exited (or could not be started); the supervisor starts it again after a delay.
    #[serde(rename_all = "camelCase")]
    Exited {
        /// How it ended, e.g. `killed by signal 9` or `exit status 1`.
        exit: String,
        /// Restarts so far.
        restarts: u32,
        /// The delay before the next start, in milliseconds.
        restart_in_ms: u64,
    },
    /// Stopped for good: the gateway is shutting down.
    #[serde(rename_all = "camelCase")]
    Stopped {
        /// Restarts over the gateway's life.
        restarts: u32,
    },
}

impl BackendProcess {
    /// What the backend's status is with the process in this state, given what the probe
    /// and warm-up say (`status`).
    pub(crate) fn apply(&self, status: ProviderStatus) -> ProviderStatus {
        match self {
            BackendProcess::Starting { .. } => ProviderStatus::Warming,
            BackendProcess::Running { .. } => status,
            BackendProcess::Exited { .. } | BackendProcess::Stopped { .. } => {
                ProviderStatus::Unavailable
            }
        }
    }
}

impl Runtime {
    /// The supervisor started the backend process `pid` of `model` (after `restarts`
    /// restarts): its readiness says `provider_warming` until the process answers.
    pub fn backend_process_starting(&self, model: &str, pid: u32, restarts: u32) {
        if let Some(entry) = self.inner.registry.get(model) {
            entry
                .health
                .set_process(BackendProcess::Starting { pid, restarts });
        }
    }

    /// The started process of `model` accepts connections: probe it now rather than at the
    /// next tick.
    pub fn backend_process_listening(&self, model: &str) {
        if let Some(entry) = self.inner.registry.get(model) {
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
        if let Some(entry) = self.inner.registry.get(model) {
            entry.health.set_process(BackendProcess::Exited {
                exit,
                restarts,
                restart_in_ms: restart_in.as_millis() as u64,
            });
        }
    }

    /// The backend process of `model` was stopped for good (shutdown).
    pub fn backend_process_stopped(&self, model: &str, restarts: u32) {
        if let Some(entry) = self.inner.registry.get(model) {
            entry
                .health
                .set_process(BackendProcess::Stopped { restarts });
        }
    }

    /// The supervised process's state of `model`, when a supervisor runs it.
    pub fn backend_process(&self, model: &str) -> Option<BackendProcess> {
        self.inner.registry.get(model)?.health.process()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_state_overrides_the_probe() {
        use ProviderStatus::*;
        let starting = BackendProcess::Starting {
            pid: 1,
            restarts: 0,
        };
        let running = BackendProcess::Running {
            pid: 1,
            restarts: 0,
        };
        let exited = BackendProcess::Exited {
            exit: "exit status 1".into(),
            restarts: 1,
            restart_in_ms: 1000,
        };
        assert_eq!(starting.apply(Unavailable), Warming);
        assert_eq!(starting.apply(Ready), Warming);
        assert_eq!(running.apply(Degraded), Degraded);
        assert_eq!(exited.apply(Ready), Unavailable);
        assert_eq!(
            serde_json::to_value(&exited).unwrap(),
            serde_json::json!({"state":"exited","exit":"exit status 1","restarts":1,"restartInMs":1000})
        );
    }
}
