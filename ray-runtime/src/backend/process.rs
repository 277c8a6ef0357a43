//! A backend process run by a supervisor (`ray-server` with `launchProfile.supervise`), as
//! readiness sees it: while the process starts, the backend is `warming` (requests are refused
//! with `provider_warming`), once it exits it is `unavailable` until the next start answers.
//!
//! The supervisor reports what it does to the process; the runtime's own probe decides when a
//! started process counts as running (its first answer), and is woken at once by each report
//! so readiness follows within milliseconds instead of the monitor's two seconds.

use ray_core::wire::ProviderStatus;
use serde::Serialize;

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
