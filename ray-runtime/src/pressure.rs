//! Pressure signals: the gateway's RSS, its cgroup's memory and CPU (v2, or v1 controllers on
//! older hosts), and Linux PSI for memory and CPU at host and cgroup level. Read cheaply (one
//! small file each) and at most every [`SAMPLE_INTERVAL`]; a source that does not exist is
//! reported as unavailable (its fields absent), never as an error.

mod evaluate;
pub(crate) mod metrics;
mod parse;
mod sources;

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use ray_core::config::GracefulDegradationConfig;
use ray_core::wire::{CpuHealth, MemoryHealth};

pub use parse::parse_vm_rss;
pub(crate) use sources::{Location, Reading};
pub use sources::{PressureSources, SAMPLE_INTERVAL};

/// Pressure at one moment, as the degradation policy sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PressureSnapshot {
    /// Requests waiting in the scheduler.
    pub queue_depth: u32,
    /// The host and process signals, shared between the requests that read the same sample.
    pub signals: Arc<PressureSignals>,
}

/// Memory and CPU signals read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PressureSignals {
    /// Memory signals, the sources that report pressure, and whether it is critical.
    pub memory: MemoryHealth,
    /// CPU signals and the sources that report pressure.
    pub cpu: CpuHealth,
    /// The raw reading (bytes, microseconds, every PSI average), for metrics.
    pub(crate) reading: Reading,
}

/// Reads and caches the host and process signals.
#[derive(Debug)]
pub(crate) struct PressureMonitor {
    config: GracefulDegradationConfig,
    sources: PressureSources,
    state: Mutex<MonitorState>,
}

#[derive(Debug, Default)]
struct MonitorState {
    /// The cgroup directories, found on the first reading.
    location: Option<Location>,
    last: Option<(Instant, Arc<PressureSignals>)>,
}

impl PressureMonitor {
    pub(crate) fn new(
        config: GracefulDegradationConfig,
        sources: PressureSources,
    ) -> PressureMonitor {
        PressureMonitor {
            config,
            sources,
            state: Mutex::new(MonitorState::default()),
        }
    }

    /// Memory and CPU signals, read again if the last reading is older than the sample
    /// interval. Concurrent callers share one reading.
    pub(crate) fn sample(&self) -> Arc<PressureSignals> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if let Some((at, signals)) = &state.last
            && now.duration_since(*at) < self.sources.sample_interval()
        {
            return signals.clone();
        }
        let location = state
            .location
            .get_or_insert_with(|| self.sources.locate())
            .clone();
        let reading = self.sources.read_all(&location);
        let previous = state.last.as_ref().map(|(_, signals)| &signals.reading);
        let (memory, cpu) = evaluate::evaluate(&self.config, &reading, previous);
        let signals = Arc::new(PressureSignals {
            memory,
            cpu,
            reading,
        });
        state.last = Some((now, signals.clone()));
        signals
    }

    /// Whether new work is refused now: memory pressure is critical and
    /// `gracefulDegradation.refuseOnCriticalMemory` is on.
    pub(crate) fn refuses(&self, signals: &PressureSignals) -> bool {
        self.config.refuse_on_critical_memory && signals.memory.critical
    }
}

/// The resident set size of this process, from `/proc/self/status` (`None` off Linux).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes().unwrap() > 0);
        }
    }
}
