//! A model's backend health state: the last probe (reused for one second, refreshes
//! coalesced), warm-up state, the supervised process and the gate in front of requests. A leaf
//! the registry holds; the runtime's health and readiness answers are in [`crate::health`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ray_core::wire::{ProviderHealth, ProviderStatus};
use ray_core::{ErrorCode, RayError};
use ray_models::{Provider, ProviderHealthReport};

use crate::backend::process::BackendProcess;

/// How long a provider probe is reused.
pub const PROVIDER_HEALTH_TTL: Duration = Duration::from_secs(1);
/// How often the background monitor probes a backend.
pub const HEALTH_MONITOR_INTERVAL: Duration = Duration::from_secs(2);
/// A probe older than this no longer gates requests.
const GATE_MAX_AGE: Duration = Duration::from_secs(5);

/// Where warm-up stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmState {
    /// No warm-up is configured (`warmOnBoot` false) or it has not been asked for.
    Idle,
    /// `warmOnBoot` is set and warm-up has not started yet.
    Pending,
    /// A warm-up attempt is running.
    Warming,
    /// Warm-up succeeded.
    Ready,
    /// The last attempt failed (a retry is scheduled); the message says why.
    Failed(String),
}

#[derive(Debug)]
struct CachedReport {
    at: std::time::Instant,
    checked_at: String,
    report: ProviderHealthReport,
}

#[derive(Debug)]
pub(crate) struct HealthState {
    warm: Mutex<WarmState>,
    report: Mutex<Option<CachedReport>>,
    refresh: tokio::sync::Mutex<()>,
    /// What the last probe said (before warm-up state is applied).
    pub(crate) last_status: AtomicU8,
    /// Wakes the monitor to probe at once (after a failed backend call).
    pub(crate) probe_now: tokio::sync::Notify,
    /// Wakes the warm-up loop to retry at once (the backend came up).
    pub(crate) retry_warm: tokio::sync::Notify,
    /// The backend process, when a supervisor runs it.
    process: Mutex<Option<BackendProcess>>,
    /// Which of `process`, `warm` and `report` may refuse a request ([`GATE_PROCESS`],
    /// [`GATE_WARM`], [`GATE_REPORT`]), each bit set or cleared under its value's lock: with
    /// none set, [`HealthState::refusal`] answers without taking a lock.
    gate: AtomicU8,
}

/// [`HealthState::gate`]: the process is starting, exited or stopped.
const GATE_PROCESS: u8 = 1;
/// [`HealthState::gate`]: warm-up is pending, running or failed.
const GATE_WARM: u8 = 2;
/// [`HealthState::gate`]: the cached probe says unavailable or loading (however old it is).
const GATE_REPORT: u8 = 4;

pub(crate) fn status_to_u8(status: ProviderStatus) -> u8 {
    match status {
        ProviderStatus::Unknown => 0,
        ProviderStatus::Ready => 1,
        ProviderStatus::Warming => 2,
        ProviderStatus::Degraded => 3,
        ProviderStatus::Unavailable => 4,
    }
}

fn status_from_u8(value: u8) -> ProviderStatus {
    match value {
        1 => ProviderStatus::Ready,
        2 => ProviderStatus::Warming,
        3 => ProviderStatus::Degraded,
        4 => ProviderStatus::Unavailable,
        _ => ProviderStatus::Unknown,
    }
}

impl HealthState {
    pub(crate) fn new(warm_on_boot: bool) -> HealthState {
        HealthState {
            warm: Mutex::new(if warm_on_boot {
                WarmState::Pending
            } else {
                WarmState::Idle
            }),
            report: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            last_status: AtomicU8::new(0),
            probe_now: tokio::sync::Notify::new(),
            retry_warm: tokio::sync::Notify::new(),
            process: Mutex::new(None),
            gate: AtomicU8::new(if warm_on_boot { GATE_WARM } else { 0 }),
        }
    }

    /// Sets or clears one bit of the gate (called under the lock of the value it stands for).
    fn set_gate(&self, bit: u8, refuses: bool) {
        if refuses {
            self.gate.fetch_or(bit, Ordering::Release);
        } else if self.gate.load(Ordering::Relaxed) & bit != 0 {
            self.gate.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Stores the cached probe and its gate bit.
    fn set_report(&self, report: Option<CachedReport>) {
        let mut cached = self.report.lock();
        let refuses = report.as_ref().is_some_and(|c| {
            matches!(
                c.report.status,
                ProviderStatus::Unavailable | ProviderStatus::Warming
            )
        });
        *cached = report;
        self.set_gate(GATE_REPORT, refuses);
    }

    /// Records what the supervisor did to the backend process, forgets the cached probe (it
    /// described another process) and wakes the monitor.
    pub(crate) fn set_process(&self, process: BackendProcess) {
        {
            let mut current = self.process.lock();
            let refuses = !matches!(process, BackendProcess::Running { .. });
            *current = Some(process);
            self.set_gate(GATE_PROCESS, refuses);
        }
        self.set_report(None);
        self.probe_now.notify_one();
    }

    pub(crate) fn process(&self) -> Option<BackendProcess> {
        self.process.lock().clone()
    }

    /// What the last probe said, before warm-up and process state are applied.
    pub(crate) fn probed_status(&self) -> ProviderStatus {
        status_from_u8(self.last_status.load(Ordering::Relaxed))
    }

    /// A started process that answers its probe is running.
    pub(crate) fn note_probe(&self, status: ProviderStatus) {
        if status == ProviderStatus::Unavailable {
            return;
        }
        let mut process = self.process.lock();
        if let Some(BackendProcess::Starting { pid, restarts }) = *process {
            *process = Some(BackendProcess::Running { pid, restarts });
            self.set_gate(GATE_PROCESS, false);
        }
    }

    /// `status` with the supervised process's state applied.
    pub(crate) fn with_process(&self, status: ProviderStatus) -> ProviderStatus {
        match &*self.process.lock() {
            Some(process) => process.apply(status),
            None => status,
        }
    }

    /// Why a request should be refused now, if the backend is known to be down or loading:
    /// from the warm-up state, or from a probe at most a few seconds old.
    pub(crate) fn refusal(&self) -> Option<RayError> {
        if self.gate.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.refusal_locked()
    }

    /// [`HealthState::refusal`] read under the locks.
    fn refusal_locked(&self) -> Option<RayError> {
        match &*self.process.lock() {
            Some(BackendProcess::Starting { .. }) => {
                return Some(RayError::new(
                    ErrorCode::ProviderWarming,
                    "The backend process is starting; retry shortly",
                ));
            }
            Some(BackendProcess::Exited {
                exit,
                restart_in_ms,
                ..
            }) => {
                return Some(
                    RayError::new(
                        ErrorCode::ProviderUnavailable,
                        "The backend process exited; it is being restarted",
                    )
                    .with_details(serde_json::json!({
                        "backendExit": exit,
                        "restartInMs": restart_in_ms,
                    })),
                );
            }
            Some(BackendProcess::Stopped { .. }) => {
                return Some(RayError::new(
                    ErrorCode::ProviderUnavailable,
                    "The backend process was stopped: the gateway is shutting down",
                ));
            }
            Some(BackendProcess::Running { .. }) | None => {}
        }
        match &*self.warm.lock() {
            WarmState::Pending | WarmState::Warming => {
                return Some(RayError::new(
                    ErrorCode::ProviderWarming,
                    "The backend is warming up; retry shortly",
                ));
            }
            WarmState::Failed(message) => {
                return Some(
                    RayError::new(
                        ErrorCode::ProviderUnavailable,
                        "The backend is unavailable: warm-up failed (it is retried)",
                    )
                    .with_details(serde_json::json!({ "warmupError": message })),
                );
            }
            WarmState::Idle | WarmState::Ready => {}
        }
        let report = self.report.lock();
        let recent = report.as_ref().filter(|c| c.at.elapsed() < GATE_MAX_AGE)?;
        match recent.report.status {
            ProviderStatus::Unavailable => Some(RayError::new(
                ErrorCode::ProviderUnavailable,
                "The backend is unavailable; /readyz says so too",
            )),
            ProviderStatus::Warming => Some(RayError::new(
                ErrorCode::ProviderWarming,
                "The backend is loading its model; retry shortly",
            )),
            ProviderStatus::Ready | ProviderStatus::Degraded | ProviderStatus::Unknown => None,
        }
    }

    /// A backend call failed: forget the cached probe so the next look is a live one, and
    /// wake the monitor to probe now.
    pub(crate) fn note_failure(&self, code: ErrorCode) {
        if matches!(
            code,
            ErrorCode::ProviderRequestFailed
                | ErrorCode::ProviderTimeout
                | ErrorCode::ProviderUpstreamError
        ) {
            self.set_report(None);
            self.probe_now.notify_one();
        }
    }

    pub(crate) fn warm(&self) -> WarmState {
        self.warm.lock().clone()
    }

    pub(crate) fn set_warm(&self, state: WarmState) {
        let mut warm = self.warm.lock();
        let refuses = matches!(
            state,
            WarmState::Pending | WarmState::Warming | WarmState::Failed(_)
        );
        *warm = state;
        self.set_gate(GATE_WARM, refuses);
    }

    /// The backend's state now, without probing: the warm-up state combined with the last
    /// probe (a provider without a probe counts as ready). Feeds `ray_provider_status`, which
    /// must not wait for someone to look at `/health`.
    pub(crate) fn status_now(&self, has_probe: bool) -> ProviderStatus {
        let probed = if has_probe {
            status_from_u8(self.last_status.load(Ordering::Relaxed))
        } else {
            ProviderStatus::Ready
        };
        self.with_process(combine(&self.warm(), probed))
    }

    /// The provider's probe, reused for [`PROVIDER_HEALTH_TTL`]; concurrent refreshes wait for
    /// one probe instead of each sending their own.
    pub(crate) async fn probe(&self, provider: &dyn Provider) -> (ProviderHealthReport, String) {
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let report = provider.health().await;
        let checked_at = ray_core::time::now_rfc3339();
        self.set_report(Some(CachedReport {
            at: std::time::Instant::now(),
            checked_at: checked_at.clone(),
            report: report.clone(),
        }));
        (report, checked_at)
    }

    pub(crate) fn fresh(&self) -> Option<(ProviderHealthReport, String)> {
        let cached = self.report.lock();
        cached
            .as_ref()
            .filter(|c| c.at.elapsed() < PROVIDER_HEALTH_TTL)
            .map(|c| (c.report.clone(), c.checked_at.clone()))
    }
}

/// Combines the warm-up state with what the backend says.
pub(crate) fn combine(warm: &WarmState, probed: ProviderStatus) -> ProviderStatus {
    match warm {
        WarmState::Pending | WarmState::Warming => {
            if probed == ProviderStatus::Unavailable {
                ProviderStatus::Unavailable
            } else {
                ProviderStatus::Warming
            }
        }
        WarmState::Failed(_) => ProviderStatus::Unavailable,
        WarmState::Idle | WarmState::Ready => probed,
    }
}

/// Whether the backend reports serving another model than the configured one.
pub(crate) fn mismatched(provider: &ProviderHealth) -> bool {
    provider
        .model_identity
        .as_ref()
        .is_some_and(|identity| !identity.matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One change to a model's health, as the monitor, the warm-up loop, the supervisor or a
    /// failed call makes it.
    #[derive(Debug, Clone)]
    enum Change {
        Warm(u8),
        Process(u8),
        Probe(u8),
        Failure,
        ProbeAnswered(u8),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..5).prop_map(Change::Warm),
            (0u8..4).prop_map(Change::Process),
            (0u8..5).prop_map(Change::Probe),
            Just(Change::Failure),
            (0u8..5).prop_map(Change::ProbeAnswered),
        ]
    }

    fn status(n: u8) -> ProviderStatus {
        status_from_u8(n)
    }

    fn apply(health: &HealthState, change: &Change) {
        match change {
            Change::Warm(n) => health.set_warm(match n {
                0 => WarmState::Idle,
                1 => WarmState::Pending,
                2 => WarmState::Warming,
                3 => WarmState::Ready,
                _ => WarmState::Failed("boom".into()),
            }),
            Change::Process(n) => health.set_process(match n {
                0 => BackendProcess::Starting {
                    pid: 1,
                    restarts: 0,
                },
                1 => BackendProcess::Running {
                    pid: 1,
                    restarts: 0,
                },
                2 => BackendProcess::Exited {
                    exit: "exit status 1".into(),
                    restarts: 1,
                    restart_in_ms: 500,
                },
                _ => BackendProcess::Stopped { restarts: 1 },
            }),
            Change::Probe(n) => health.set_report(Some(CachedReport {
                at: std::time::Instant::now(),
                checked_at: String::new(),
                report: ProviderHealthReport::status(status(*n)),
            })),
            Change::Failure => health.note_failure(ErrorCode::ProviderTimeout),
            Change::ProbeAnswered(n) => health.note_probe(status(*n)),
        }
    }

    proptest::proptest! {
        /// After any sequence of changes, the lock-free answer is the locked one: the gate
        /// is clear only when nothing would refuse.
        #[test]
        fn gate_agrees_with_the_locked_answer(
            warm_on_boot in proptest::bool::ANY,
            changes in proptest::collection::vec(change(), 0..24),
        ) {
            let health = HealthState::new(warm_on_boot);
            for change in &changes {
                apply(&health, change);
                let fast = health.refusal().map(|e| e.code());
                let locked = health.refusal_locked().map(|e| e.code());
                proptest::prop_assert_eq!(fast, locked);
            }
        }
    }

    #[test]
    fn a_starting_process_refuses_until_its_probe_answers() {
        let health = HealthState::new(false);
        assert!(health.refusal().is_none());
        health.set_process(BackendProcess::Starting {
            pid: 7,
            restarts: 0,
        });
        assert_eq!(
            health.refusal().map(|e| e.code()),
            Some(ErrorCode::ProviderWarming)
        );
        health.note_probe(ProviderStatus::Ready);
        assert!(health.refusal().is_none());
        assert_eq!(health.gate.load(Ordering::Relaxed), 0);
    }
}
