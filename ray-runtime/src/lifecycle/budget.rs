//! The memory budget of the managed models, and whether they fit it.

use std::path::Path;

use ray_core::config::{HostPolicy, LifecycleConfig, RayConfig};

use crate::footprint::{LlamaEstimate, MeasuredFootprints, footprint_key};

/// Where the budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    /// `lifecycle.memoryBudgetMiB`.
    Config,
    /// The cgroup's `memory.max`, less `reserveMiB`.
    Cgroup,
    /// The machine's `MemTotal`, less `reserveMiB`.
    Machine,
    /// Nothing could be read: the reserve alone is not enough to size anything.
    Unknown,
    /// The host policy's `maxMemoryMiB`, less `reserveMiB`: the budget above would exceed it.
    Policy,
}

impl BudgetSource {
    /// How messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            BudgetSource::Config => "lifecycle.memoryBudgetMiB",
            BudgetSource::Cgroup => "the cgroup memory limit less lifecycle.reserveMiB",
            BudgetSource::Machine => "the machine's memory less lifecycle.reserveMiB",
            BudgetSource::Unknown => "no readable memory size",
            BudgetSource::Policy => "the host policy's maxMemoryMiB less lifecycle.reserveMiB",
        }
    }
}

/// The smallest `memory.max` on the way from the process's cgroup (v2) to the root, below
/// `root` (`/` in production), in bytes.
fn cgroup_limit(root: &Path) -> Option<u64> {
    let cgroup = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let mut dir = root
        .join("sys/fs/cgroup")
        .join(path.trim_start_matches('/'));
    let base = root.join("sys/fs/cgroup");
    let mut smallest: Option<u64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.max"))
            && let Ok(bytes) = text.trim().parse::<u64>()
        {
            smallest = Some(smallest.map_or(bytes, |s| s.min(bytes)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(&base) {
            break;
        }
    }
    smallest
}

/// `MemTotal` from `/proc/meminfo` below `root`, in bytes.
fn machine_memory(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The budget in MiB and where it came from: `memoryBudgetMiB`, else the cgroup limit, else
/// the machine's memory, less `reserveMiB`; never more than the host policy's `maxMemoryMiB`
/// less `reserveMiB` (`policy`: the config's, [`RayConfig::policy`]). Files are read below
/// `root`.
pub fn memory_budget(
    lifecycle: &LifecycleConfig,
    policy: Option<&HostPolicy>,
    root: &Path,
) -> (u64, BudgetSource) {
    let (budget, source) = unclamped_budget(lifecycle, root);
    match policy.and_then(|p| p.max_memory_mib) {
        Some(max) => {
            let cap = u64::from(max).saturating_sub(lifecycle.reserve_mib);
            if budget > cap || source == BudgetSource::Unknown {
                (cap, BudgetSource::Policy)
            } else {
                (budget, source)
            }
        }
        None => (budget, source),
    }
}

/// The budget before the host policy.
fn unclamped_budget(lifecycle: &LifecycleConfig, root: &Path) -> (u64, BudgetSource) {
    if let Some(budget) = lifecycle.memory_budget_mib {
        return (budget, BudgetSource::Config);
    }
    let (bytes, source) = match cgroup_limit(root) {
        Some(limit) => (Some(limit), BudgetSource::Cgroup),
        None => (machine_memory(root), BudgetSource::Machine),
    };
    match bytes {
        Some(bytes) => ((bytes >> 20).saturating_sub(lifecycle.reserve_mib), source),
        None => (0, BudgetSource::Unknown),
    }
}

/// Where the host policy cut the default budget: `(before, where it came from, after)`, or
/// `None` when it did not (no policy limit, a default already within it, no readable memory
/// size so that the policy's figure is the budget rather than a cut, or a budget the config
/// sets, which the loader cuts and reports itself).
pub fn policy_cut(
    lifecycle: &LifecycleConfig,
    policy: Option<&HostPolicy>,
    root: &Path,
) -> Option<(u64, BudgetSource, u64)> {
    if lifecycle.memory_budget_mib.is_some() {
        return None;
    }
    let (before, source) = unclamped_budget(lifecycle, root);
    match memory_budget(lifecycle, policy, root) {
        (after, BudgetSource::Policy) if before > after => Some((before, source, after)),
        _ => None,
    }
}

/// One managed model's footprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFit {
    /// The model's id.
    pub id: String,
    /// The config path of its entry (`model` or `models[i]`).
    pub path: String,
    /// Its footprint in MiB (measured when a measurement is kept, else estimated).
    pub footprint_mib: u64,
    /// Whether it was measured.
    pub measured: bool,
    /// Whether it is pinned.
    pub resident: bool,
    /// Why it could not be sized (its model file cannot be read), when so.
    pub problem: Option<String>,
}

/// The budget and the managed models' footprints under `config` (which must have a
/// `lifecycle` section; `None` otherwise). Files are read below `root`.
pub fn fit(config: &RayConfig, root: &Path) -> Option<(u64, BudgetSource, Vec<ModelFit>)> {
    let lifecycle = config.lifecycle.as_ref()?;
    let (budget, source) = memory_budget(lifecycle, config.policy.as_ref(), root);
    // Files are read below `root` (a fabricated host in tests, `/` on the box itself).
    let below = |path: &str| root.join(path.trim_start_matches('/'));
    let measured = MeasuredFootprints::open(&below(&lifecycle.state_dir));
    let entries: Vec<(String, &ray_core::config::ModelConfig)> = if config.models.is_empty() {
        vec![("model".into(), &config.model)]
    } else {
        config
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("models[{i}]"), m))
            .collect()
    };
    let mut fits = Vec::new();
    for (path, model) in entries {
        let Some(launch) = model.adapter.launch_profile().filter(|l| l.supervise) else {
            continue;
        };
        let mut read = launch.clone();
        read.model_path = below(&launch.model_path).display().to_string();
        let (footprint_mib, was_measured, problem) = match LlamaEstimate::of_launch(&read) {
            Ok(estimate) => {
                let kept = measured
                    .get(&model.id, &footprint_key(launch))
                    .map(|m| m.load_mib);
                (estimate.lifecycle_mib(kept), kept.is_some(), None)
            }
            Err(problem) => (0, false, Some(problem)),
        };
        fits.push(ModelFit {
            id: model.id.clone(),
            path,
            footprint_mib,
            measured: was_measured,
            resident: model.resident,
            problem,
        });
    }
    Some((budget, source, fits))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_budget_is_the_config_else_the_cgroup_else_the_machine_less_the_reserve() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut lifecycle = LifecycleConfig::default();
        assert_eq!(
            memory_budget(&lifecycle, None, r),
            (0, BudgetSource::Unknown)
        );
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::write(
            r.join("proc/meminfo"),
            "MemTotal:        4014080 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        assert_eq!(
            memory_budget(&lifecycle, None, r),
            (3920 - 768, BudgetSource::Machine)
        );
        std::fs::write(r.join("proc/self/cgroup"), "0::/system.slice/ray.service\n").unwrap();
        let unit = r.join("sys/fs/cgroup/system.slice/ray.service");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(unit.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            r.join("sys/fs/cgroup/system.slice/memory.max"),
            format!("{}\n", 3072u64 << 20),
        )
        .unwrap();
        assert_eq!(
            memory_budget(&lifecycle, None, r),
            (3072 - 768, BudgetSource::Cgroup)
        );
        lifecycle.memory_budget_mib = Some(2048);
        assert_eq!(
            memory_budget(&lifecycle, None, r),
            (2048, BudgetSource::Config)
        );
    }

    #[test]
    fn the_host_policy_caps_the_budget_less_the_reserve() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(r.join("proc/meminfo"), "MemTotal:        8192000 kB\n").unwrap();
        let mut lifecycle = LifecycleConfig::default();
        let policy = HostPolicy {
            max_memory_mib: Some(3072),
            ..HostPolicy::default()
        };
        // The machine's 8000 MiB less 768 is more than the policy's 3072 less 768.
        assert_eq!(
            memory_budget(&lifecycle, Some(&policy), r),
            (3072 - 768, BudgetSource::Policy)
        );
        assert_eq!(
            policy_cut(&lifecycle, Some(&policy), r),
            Some((8000 - 768, BudgetSource::Machine, 3072 - 768))
        );
        // A policy above what the machine has changes nothing.
        let roomy = HostPolicy {
            max_memory_mib: Some(16_384),
            ..HostPolicy::default()
        };
        assert_eq!(
            memory_budget(&lifecycle, Some(&roomy), r),
            (8000 - 768, BudgetSource::Machine)
        );
        assert_eq!(policy_cut(&lifecycle, Some(&roomy), r), None);
        // Nothing readable: the policy's figure is the budget.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            memory_budget(&lifecycle, Some(&policy), empty.path()),
            (3072 - 768, BudgetSource::Policy)
        );
        assert_eq!(policy_cut(&lifecycle, Some(&policy), empty.path()), None);
        // A budget the config sets is capped too (the loader has already cut and reported it).
        lifecycle.memory_budget_mib = Some(4096);
        assert_eq!(
            memory_budget(&lifecycle, Some(&policy), r),
            (3072 - 768, BudgetSource::Policy)
        );
        assert_eq!(policy_cut(&lifecycle, Some(&policy), r), None);
    }
}
