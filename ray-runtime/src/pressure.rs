//! Pressure signals: read cheaply and at most every 250 ms, reported as unavailable (absent)
//! rather than as errors when a source does not exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ray_core::config::GracefulDegradationConfig;
use ray_core::wire::{CpuHealth, MemoryHealth};

/// How often a signal is read at most.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

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
    /// Memory signals and whether any reports pressure.
    pub memory: MemoryHealth,
    /// CPU signals and whether any reports pressure.
    pub cpu: CpuHealth,
}

/// Reads and caches the host and process signals.
#[derive(Debug)]
pub(crate) struct PressureMonitor {
    config: GracefulDegradationConfig,
    cached: Mutex<Option<(Instant, Arc<PressureSignals>)>>,
}

impl PressureMonitor {
    pub(crate) fn new(config: GracefulDegradationConfig) -> PressureMonitor {
        PressureMonitor {
            config,
            cached: Mutex::new(None),
        }
    }

    /// Memory and CPU signals, read again if the cached ones are older than 250 ms.
    pub(crate) fn sample(&self) -> Arc<PressureSignals> {
        let now = Instant::now();
        let mut cached = self.cached.lock();
        if let Some((at, signals)) = cached.as_ref()
            && now.duration_since(*at) < SAMPLE_INTERVAL
        {
            return signals.clone();
        }
        let signals = Arc::new(PressureSignals {
            memory: self.read_memory(),
            cpu: CpuHealth::default(),
        });
        *cached = Some((now, signals.clone()));
        signals
    }

    fn read_memory(&self) -> MemoryHealth {
        let mut health = MemoryHealth::default();
        let threshold = f64::from(self.config.memory_rss_threshold_mib);
        health.signals.memory_rss_threshold_mib = Some(threshold);
        if let Some(rss) = process_rss_bytes() {
            let rss_mib = rss as f64 / (1024.0 * 1024.0);
            let ratio = if threshold > 0.0 {
                rss_mib / threshold
            } else {
                0.0
            };
            health.signals.process_rss_mib = Some(round2(rss_mib));
            health.signals.process_rss_pressure_ratio = Some(round2(ratio));
            if ratio >= 1.0 {
                health.sources.push("process_rss".into());
            }
        }
        health.degraded = !health.sources.is_empty();
        health
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The resident set size of this process, from `/proc/self/status` (`None` off Linux).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// Parses the `VmRSS:` line of `/proc/<pid>/status` into bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let factor = match unit {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tray-server\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes().unwrap() > 0);
        }
    }
}
