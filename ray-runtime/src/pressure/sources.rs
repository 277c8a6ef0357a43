//! Where pressure signals are read from, and reading them: one small file read per signal,
//! every file optional.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{
    CgroupPaths, Limit, Psi, keyed_value, parse_cpu_max, parse_limit, parse_proc_cgroup, parse_psi,
    parse_u64, parse_v1_limit, parse_vm_rss,
};

/// How often the signals are read at most; requests in between share the last reading.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Where the runtime reads its pressure signals: a root directory holding `proc/` and
/// `sys/fs/cgroup/` as Linux lays them out.
///
/// [`PressureSources::system`] (the default) reads the real `/proc` and `/sys/fs/cgroup`. A
/// test, or an embedder with its own view of the machine, points [`PressureSources::under`] at
/// another directory with the same layout, for example a fabricated cgroup that is close to
/// its memory limit. Files that do not exist (no cgroup v2, no PSI, not Linux) make their
/// signals unavailable; nothing fails.
///
/// The files read, relative to the root:
///
/// - `proc/self/status` (`VmRSS`), `proc/self/cgroup` (which cgroup the process is in),
///   `proc/pressure/memory` and `proc/pressure/cpu` (host PSI);
/// - cgroup v2, under `sys/fs/cgroup/<path>` (or `sys/fs/cgroup/unified/<path>` on a hybrid
///   host): `memory.current`, `memory.high`, `memory.max`, `memory.events`, `memory.stat`,
///   `memory.swap.current`, `memory.swap.max`, `memory.pressure`, `cpu.stat`, `cpu.max`,
///   `cpu.pressure`;
/// - cgroup v1, for controllers not on the unified hierarchy: `memory.usage_in_bytes`,
///   `memory.limit_in_bytes`, `memory.memsw.*`, `memory.stat`, `memory.failcnt`,
///   `memory.oom_control` under `sys/fs/cgroup/memory/<path>`, and `cpu.stat`,
///   `cpu.cfs_quota_us`, `cpu.cfs_period_us` under the cpu controller's directory.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ray_runtime::PressureSources;
///
/// // A fabricated machine whose readings are taken afresh on every request.
/// let sources = PressureSources::under("/tmp/fake-host").with_sample_interval(Duration::ZERO);
/// assert_eq!(sources.root(), std::path::Path::new("/tmp/fake-host"));
/// assert_eq!(PressureSources::default().root(), std::path::Path::new("/"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PressureSources {
    root: PathBuf,
    sample_interval: Duration,
}

impl Default for PressureSources {
    fn default() -> PressureSources {
        PressureSources::system()
    }
}

impl PressureSources {
    /// The running machine: `/proc` and `/sys/fs/cgroup`, read at most every
    /// [`SAMPLE_INTERVAL`].
    pub fn system() -> PressureSources {
        PressureSources::under("/")
    }

    /// A directory laid out like `/` (with `proc/...` and `sys/fs/cgroup/...`), read at most
    /// every [`SAMPLE_INTERVAL`].
    pub fn under(root: impl Into<PathBuf>) -> PressureSources {
        PressureSources {
            root: root.into(),
            sample_interval: SAMPLE_INTERVAL,
        }
    }

    /// Reads at most once per `interval` (zero: on every look).
    pub fn with_sample_interval(mut self, interval: Duration) -> PressureSources {
        self.sample_interval = interval;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How often the signals are read at most.
    pub fn sample_interval(&self) -> Duration {
        self.sample_interval
    }

    fn read(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(relative)).ok()
    }

    /// Finds this process's cgroup directories.
    pub(crate) fn locate(&self) -> Location {
        let Some(text) = self.read("proc/self/cgroup") else {
            return Location::default();
        };
        let CgroupPaths {
            unified,
            memory,
            cpu,
        } = parse_proc_cgroup(&text);
        let cgroup = self.root.join("sys/fs/cgroup");
        let relative = |path: &str| path.trim_start_matches('/').to_string();
        // Pure v2 mounts the unified hierarchy at /sys/fs/cgroup, a hybrid host under
        // /sys/fs/cgroup/unified.
        let v2_dir = unified.as_deref().and_then(|path| {
            ["", "unified"]
                .iter()
                .map(|mount| cgroup.join(mount))
                .find(|mount| mount.join("cgroup.controllers").is_file())
                .map(|mount| mount.join(relative(path)))
        });
        Location {
            unified_path: unified,
            v2_dir,
            v1_memory_dir: memory
                .as_deref()
                .map(|path| cgroup.join("memory").join(relative(path))),
            v1_memory_path: memory,
            v1_cpu_dir: cpu.map(|(mount, path)| cgroup.join(mount).join(relative(&path))),
        }
    }

    /// Reads every signal once.
    pub(crate) fn read_all(&self, location: &Location) -> Reading {
        Reading {
            rss_bytes: self
                .read("proc/self/status")
                .as_deref()
                .and_then(parse_vm_rss),
            host_memory_psi: self
                .read("proc/pressure/memory")
                .as_deref()
                .and_then(parse_psi),
            host_cpu_psi: self
                .read("proc/pressure/cpu")
                .as_deref()
                .and_then(parse_psi),
            cgroup: read_cgroup(location),
        }
    }
}

/// This process's cgroup directories, found once from `/proc/self/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Location {
    /// The v2 path as `/proc/self/cgroup` names it.
    pub(crate) unified_path: Option<String>,
    /// The v1 memory controller's path.
    pub(crate) v1_memory_path: Option<String>,
    /// The v2 directory, when the unified hierarchy is mounted.
    pub(crate) v2_dir: Option<PathBuf>,
    /// The v1 memory controller's directory.
    pub(crate) v1_memory_dir: Option<PathBuf>,
    /// The v1 cpu controller's directory.
    pub(crate) v1_cpu_dir: Option<PathBuf>,
}

/// Everything read at one moment, before thresholds are applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) host_memory_psi: Option<Psi>,
    pub(crate) host_cpu_psi: Option<Psi>,
    pub(crate) cgroup: Option<CgroupReading>,
}

/// The cgroup's files.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CgroupReading {
    /// The hierarchy the memory figures come from (a hybrid host mixes both).
    pub(crate) version: u8,
    /// The cgroup those figures belong to.
    pub(crate) path: String,
    pub(crate) memory_current: Option<u64>,
    pub(crate) memory_high: Option<Limit>,
    pub(crate) memory_max: Option<Limit>,
    /// Reclaimable page cache (`inactive_file`), subtracted for the working set.
    pub(crate) inactive_file: Option<u64>,
    pub(crate) swap_current: Option<u64>,
    pub(crate) swap_max: Option<Limit>,
    pub(crate) events: MemoryEvents,
    pub(crate) memory_psi: Option<Psi>,
    pub(crate) cpu: CpuStat,
    /// `cpu.max` (v1: `cfs_quota_us` and `cfs_period_us`).
    pub(crate) cpu_max: Option<(Limit, u64)>,
    pub(crate) cpu_psi: Option<Psi>,
}

/// `memory.events` counters (v1: `memory.failcnt` counts as `max`, `oom_control`'s
/// `oom_kill` as `oom_kill`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryEvents {
    pub(crate) high: Option<u64>,
    pub(crate) max: Option<u64>,
    pub(crate) oom: Option<u64>,
    pub(crate) oom_kill: Option<u64>,
}

/// `cpu.stat` (v1: `throttled_time` in nanoseconds becomes `throttled_usec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuStat {
    pub(crate) usage_usec: Option<u64>,
    pub(crate) user_usec: Option<u64>,
    pub(crate) system_usec: Option<u64>,
    pub(crate) nr_periods: Option<u64>,
    pub(crate) nr_throttled: Option<u64>,
    pub(crate) throttled_usec: Option<u64>,
}

fn read_in(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn read_cgroup(location: &Location) -> Option<CgroupReading> {
    let mut reading = CgroupReading {
        path: location.unified_path.clone().unwrap_or_default(),
        ..CgroupReading::default()
    };
    let mut found = false;
    if let Some(dir) = &location.v2_dir {
        let get = |file: &str| read_in(dir, file);
        reading.memory_current = get("memory.current").as_deref().and_then(parse_u64);
        if reading.memory_current.is_some() {
            found = true;
            reading.version = 2;
            reading.memory_high = get("memory.high").as_deref().and_then(parse_limit);
            reading.memory_max = get("memory.max").as_deref().and_then(parse_limit);
            reading.inactive_file = get("memory.stat")
                .as_deref()
                .and_then(|s| keyed_value(s, "inactive_file"));
            reading.swap_current = get("memory.swap.current").as_deref().and_then(parse_u64);
            reading.swap_max = get("memory.swap.max").as_deref().and_then(parse_limit);
            if let Some(events) = get("memory.events") {
                reading.events = MemoryEvents {
                    high: keyed_value(&events, "high"),
                    max: keyed_value(&events, "max"),
                    oom: keyed_value(&events, "oom"),
                    oom_kill: keyed_value(&events, "oom_kill"),
                };
            }
        }
        reading.memory_psi = get("memory.pressure").as_deref().and_then(parse_psi);
        reading.cpu_psi = get("cpu.pressure").as_deref().and_then(parse_psi);
        if let Some(stat) = get("cpu.stat") {
            reading.cpu = CpuStat {
                usage_usec: keyed_value(&stat, "usage_usec"),
                user_usec: keyed_value(&stat, "user_usec"),
                system_usec: keyed_value(&stat, "system_usec"),
                nr_periods: keyed_value(&stat, "nr_periods"),
                nr_throttled: keyed_value(&stat, "nr_throttled"),
                throttled_usec: keyed_value(&stat, "throttled_usec"),
            };
        }
        reading.cpu_max = get("cpu.max").as_deref().and_then(parse_cpu_max);
        found |= reading.memory_psi.is_some()
            || reading.cpu_psi.is_some()
            || reading.cpu.usage_usec.is_some();
    }
    if reading.memory_current.is_none()
        && let Some(dir) = &location.v1_memory_dir
    {
        let get = |file: &str| read_in(dir, file);
        reading.memory_current = get("memory.usage_in_bytes").as_deref().and_then(parse_u64);
        if let Some(usage) = reading.memory_current {
            found = true;
            reading.version = 1;
            reading.path = location.v1_memory_path.clone().unwrap_or_default();
            let limit = get("memory.limit_in_bytes")
                .as_deref()
                .and_then(parse_v1_limit);
            reading.memory_max = limit;
            reading.inactive_file = get("memory.stat")
                .as_deref()
                .and_then(|s| keyed_value(s, "total_inactive_file"));
            // memsw counts memory plus swap.
            let memsw = get("memory.memsw.usage_in_bytes")
                .as_deref()
                .and_then(parse_u64);
            reading.swap_current = memsw.map(|both| both.saturating_sub(usage));
            let memsw_limit = get("memory.memsw.limit_in_bytes")
                .as_deref()
                .and_then(parse_v1_limit);
            reading.swap_max = match (memsw_limit, limit) {
                (Some(Limit::Value(both)), Some(Limit::Value(memory))) => {
                    Some(Limit::Value(both.saturating_sub(memory)))
                }
                (Some(_), _) => Some(Limit::Unlimited),
                (None, _) => None,
            };
            reading.events.max = get("memory.failcnt").as_deref().and_then(parse_u64);
            reading.events.oom_kill = get("memory.oom_control")
                .as_deref()
                .and_then(|s| keyed_value(s, "oom_kill"));
        }
    }
    if reading.cpu.nr_periods.is_none()
        && let Some(dir) = &location.v1_cpu_dir
        && let Some(stat) = read_in(dir, "cpu.stat")
    {
        found = true;
        reading.cpu.nr_periods = keyed_value(&stat, "nr_periods");
        reading.cpu.nr_throttled = keyed_value(&stat, "nr_throttled");
        reading.cpu.throttled_usec = keyed_value(&stat, "throttled_time").map(|ns| ns / 1_000);
        let quota = read_in(dir, "cpu.cfs_quota_us")
            .as_deref()
            .and_then(parse_v1_limit);
        let period = read_in(dir, "cpu.cfs_period_us")
            .as_deref()
            .and_then(parse_u64)
            .filter(|p| *p > 0);
        if let (Some(quota), Some(period)) = (quota, period) {
            reading.cpu_max = Some((quota, period));
        }
        if reading.version == 0 {
            reading.version = 1;
        }
    }
    if reading.version == 0 && found {
        reading.version = 2;
    }
    found.then_some(reading)
}

#[cfg(test)]
mod tests;
