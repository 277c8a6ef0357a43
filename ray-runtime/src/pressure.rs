//! Pressure signals: the gateway's RSS, its cgroup's memory and CPU (v2, or v1 controllers on
//! older hosts), and Linux PSI for memory and CPU at host and cgroup level. Read cheaply (one
//! small file each) and at most every [`SAMPLE_INTERVAL`]; a source that does not exist is
//! reported as unavailable (its fields absent), never as an error.
//!
//! Requests do not wait for the files: once a first reading exists, a request that finds it
//! stale gets it as it is and starts a new reading on Tokio's blocking pool (one at a time).
//! A reading older than [`MAX_STALE_INTERVALS`] intervals (the pool busy, or no runtime) is
//! read again on the spot, so a reading is never older than that.

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

/// A reading this many sample intervals old is read again by the request that finds it,
/// instead of in the background.
pub const MAX_STALE_INTERVALS: u32 = 10;

#[derive(Debug, Default)]
struct MonitorState {
    /// The cgroup directories, found on the first reading.
    location: Option<Location>,
    last: Option<(Instant, Arc<PressureSignals>)>,
    /// A reading runs on the blocking pool.
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

    /// Memory and CPU signals. A reading older than the sample interval is read again: in the
    /// background when a Tokio runtime runs (this call returns the stale reading), on the
    /// spot for the first reading, with a zero interval, without a runtime, or when the
    /// reading is [`MAX_STALE_INTERVALS`] intervals old. Concurrent callers share one reading.
    pub(crate) fn sample(self: &Arc<Self>) -> Arc<PressureSignals> {
        let now = Instant::now();
        let interval = self.sources.sample_interval();
        let mut state = self.state.lock();
        if let Some((at, signals)) = &state.last {
            let age = now.duration_since(*at);
            if age < interval {
                return signals.clone();
            }
            let runtime = tokio::runtime::Handle::try_current();
            if let Ok(runtime) = runtime
                && age < interval.saturating_mul(MAX_STALE_INTERVALS)
            {
                let stale = signals.clone();
                if !std::mem::replace(&mut state.refreshing, true) {
                    drop(state);
                    let monitor = self.clone();
                    runtime.spawn_blocking(move || monitor.refresh());
                }
                return stale;
            }
        }
        let location = self.location(&mut state);
        let reading = self.sources.read_all(&location);
        self.store(&mut state, reading, now)
    }

    /// A reading on the blocking pool.
    fn refresh(&self) {
        let location = self.location(&mut self.state.lock());
        let started = Instant::now();
        let reading = self.sources.read_all(&location);
        let mut state = self.state.lock();
        state.refreshing = false;
        // A reading taken on the spot meanwhile is newer.
        if state.last.as_ref().is_none_or(|(at, _)| *at <= started) {
            self.store(&mut state, reading, started);
        }
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

    /// How old the current reading is (`None` before the first).
    #[cfg(test)]
    fn age(&self) -> Option<std::time::Duration> {
        self.state.lock().last.as_ref().map(|(at, _)| at.elapsed())
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

    fn monitor(dir: &tempfile::TempDir, interval: Duration) -> Arc<PressureMonitor> {
        let sources = PressureSources::under(dir.path()).with_sample_interval(interval);
        let config = ray_core::config::ConfigLoader::new()
            .with_json("inline", r#"{"profile":"tiny"}"#)
            .load()
            .unwrap()
            .config;
        Arc::new(PressureMonitor::new(
            config.graceful_degradation.clone(),
            sources,
        ))
    }

    fn rss(signals: &PressureSignals) -> Option<u64> {
        signals.reading.rss_bytes.map(|bytes| bytes / 1024)
    }

    #[tokio::test]
    async fn a_stale_reading_is_served_while_a_new_one_is_read_in_the_background() {
        let dir = host(100);
        let interval = Duration::from_millis(40);
        let monitor = monitor(&dir, interval);
        // The first reading is taken on the spot.
        assert_eq!(rss(&monitor.sample()), Some(100));
        set_rss(&dir, 200);
        // Fresh: the same reading.
        assert_eq!(rss(&monitor.sample()), Some(100));
        tokio::time::sleep(interval + Duration::from_millis(10)).await;
        // Stale: served as it is, and read again on the blocking pool.
        assert_eq!(rss(&monitor.sample()), Some(100));
        let deadline = Instant::now() + Duration::from_secs(10);
        while rss(&monitor.sample()) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the background reading never came"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!monitor.state.lock().refreshing);
        assert!(monitor.age().unwrap() < interval * MAX_STALE_INTERVALS);
    }

    #[tokio::test]
    async fn a_reading_too_old_is_read_on_the_spot() {
        let dir = host(100);
        let interval = Duration::from_millis(5);
        let monitor = monitor(&dir, interval);
        assert_eq!(rss(&monitor.sample()), Some(100));
        set_rss(&dir, 300);
        // A background reading that never ends (a busy pool) must not hold it back.
        monitor.state.lock().refreshing = true;
        tokio::time::sleep(interval * (MAX_STALE_INTERVALS + 2)).await;
        assert_eq!(rss(&monitor.sample()), Some(300));
    }

    #[test]
    fn without_a_runtime_or_with_a_zero_interval_every_look_reads() {
        let dir = host(100);
        let quick = monitor(&dir, Duration::from_millis(1));
        assert_eq!(rss(&quick.sample()), Some(100));
        set_rss(&dir, 400);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(rss(&quick.sample()), Some(400));
        let every = monitor(&dir, Duration::ZERO);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(rss(&every.sample()), Some(400));
            set_rss(&dir, 500);
            assert_eq!(rss(&every.sample()), Some(500));
        });
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes().unwrap() > 0);
        }
    }
}
