//! Pressure signals: the gateway's RSS, its cgroup's memory and CPU (v2, or v1 controllers on
//! older hosts), and Linux PSI for memory and CPU at host and cgroup level. Read cheaply (one
//! small file each) and at most every [`SAMPLE_INTERVAL`]; a source that does not exist is
//! reported as unavailable (its fields absent), never as an error.
//!
//! No request waits for another's reading: once a first reading exists, the request that finds
//! it stale reads the files (a few tens of microseconds) without holding the monitor's lock,
//! and the requests that come meanwhile take the last reading as it is.

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
    /// A caller is reading the files.
    refreshing: bool,
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

    /// Memory and CPU signals, read again when the last reading is older than the sample
    /// interval: by this caller, without holding the lock, while concurrent callers take the
    /// last reading as it is (the first reading is taken by whoever asks for it).
    pub(crate) fn sample(&self) -> Arc<PressureSignals> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let location = match &state.last {
            Some((at, signals))
                if state.refreshing || now.duration_since(*at) < self.sources.sample_interval() =>
            {
                return signals.clone();
            }
            Some(_) => self.location(&mut state),
            None => {
                // The first reading: every caller waits for it.
                let location = self.location(&mut state);
                let reading = self.sources.read_all(&location);
                return self.store(&mut state, reading, now);
            }
        };
        state.refreshing = true;
        drop(state);
        let _refreshing = Refreshing(self);
        let reading = self.sources.read_all(&location);
        let mut state = self.state.lock();
        self.store(&mut state, reading, now)
    }

    fn location(&self, state: &mut MonitorState) -> Location {
        state
            .location
            .get_or_insert_with(|| self.sources.locate())
            .clone()
    }

    fn store(
        &self,
        state: &mut MonitorState,
        reading: Reading,
        at: Instant,
    ) -> Arc<PressureSignals> {
        let previous = state.last.as_ref().map(|(_, signals)| &signals.reading);
        let (memory, cpu) = evaluate::evaluate(&self.config, &reading, previous);
        let signals = Arc::new(PressureSignals {
            memory,
            cpu,
            reading,
        });
        state.last = Some((at, signals.clone()));
        signals
    }

    /// Whether new work is refused now: memory pressure is critical and
    /// `gracefulDegradation.refuseOnCriticalMemory` is on.
    pub(crate) fn refuses(&self, signals: &PressureSignals) -> bool {
        self.config.refuse_on_critical_memory && signals.memory.critical
    }
}

/// A caller reading the files; clears the monitor's `refreshing` mark however it ends (after
/// the new reading is stored, so no other caller starts one meanwhile).
struct Refreshing<'a>(&'a PressureMonitor);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.state.lock().refreshing = false;
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
    use std::time::Duration;

    /// A machine with only this process's status file: its RSS in kB.
    fn host(rss_kb: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        set_rss(&dir, rss_kb);
        dir
    }

    fn set_rss(dir: &tempfile::TempDir, rss_kb: u64) {
        let status = format!("Name:\tray-server\nVmRSS:\t{rss_kb} kB\n");
        std::fs::write(dir.path().join("proc/self/status"), status).unwrap();
    }

    fn monitor(dir: &tempfile::TempDir, interval: Duration) -> PressureMonitor {
        let sources = PressureSources::under(dir.path()).with_sample_interval(interval);
        let config = ray_core::config::ConfigLoader::new()
            .with_json("inline", r#"{"profile":"tiny"}"#)
            .load()
            .unwrap()
            .config;
        PressureMonitor::new(config.graceful_degradation.clone(), sources)
    }

    fn rss(signals: &PressureSignals) -> Option<u64> {
        signals.reading.rss_bytes.map(|bytes| bytes / 1024)
    }

    #[test]
    fn a_stale_reading_is_read_again_by_one_caller_while_the_others_take_it_as_it_is() {
        let dir = host(100);
        let interval = Duration::from_secs(10);
        let monitor = monitor(&dir, interval);
        // The first reading is taken on the spot.
        assert_eq!(rss(&monitor.sample()), Some(100));
        set_rss(&dir, 200);
        // Fresh: the same reading.
        assert_eq!(rss(&monitor.sample()), Some(100));
        // The reading grows stale (its time moved back past the interval).
        if let Some((at, _)) = monitor.state.lock().last.as_mut() {
            *at = at.checked_sub(interval + Duration::from_secs(1)).unwrap();
        }
        // Stale while another caller reads the files: taken as it is.
        monitor.state.lock().refreshing = true;
        assert_eq!(rss(&monitor.sample()), Some(100));
        // Stale and nobody reading: this caller reads, and clears the mark after.
        monitor.state.lock().refreshing = false;
        assert_eq!(rss(&monitor.sample()), Some(200));
        assert!(!monitor.state.lock().refreshing);
    }

    #[test]
    fn concurrent_callers_never_wait_for_a_reading_but_the_first() {
        let dir = host(100);
        let monitor = monitor(&dir, Duration::ZERO);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        assert_eq!(rss(&monitor.sample()), Some(100));
                    }
                });
            }
        });
        assert!(!monitor.state.lock().refreshing);
    }

    #[test]
    fn with_a_zero_interval_every_look_reads() {
        let dir = host(100);
        let monitor = monitor(&dir, Duration::ZERO);
        assert_eq!(rss(&monitor.sample()), Some(100));
        set_rss(&dir, 500);
        assert_eq!(rss(&monitor.sample()), Some(500));
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes().unwrap() > 0);
        }
    }
}
