//! The optional `lifecycle` section, and the lifecycle fields of each model (`resident`,
//! `minResidentMs`, `idleUnloadMs`): managed models (a llama.cpp launch profile with
//! `supervise: true`) loaded on demand within a memory budget, unloaded when idle or to make
//! room. Without the section, supervised models run all the time, as before.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{ModelConfig, RayConfig};
use super::validate::Diagnostic;

/// Loading managed models on demand within a memory budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Memory the managed models may use together, in MiB (64 to 1048576). Default: the
    /// gateway's cgroup memory limit, else the machine's memory, less `reserveMiB`.
    #[serde(
        rename = "memoryBudgetMiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 64, max = 1_048_576))]
    pub memory_budget_mib: Option<u64>,
    /// What the default budget leaves for the gateway and the OS, in MiB (0 to 65536,
    /// default 768).
    #[serde(rename = "reserveMiB", default = "default_reserve_mib")]
    #[schemars(range(max = 65_536))]
    pub reserve_mib: u64,
    /// How long a model chosen to make room may take to finish its requests, in ms (1000 to
    /// 600000, default 30000). A longer drain is abandoned: its requests are never cut.
    #[serde(default = "default_drain_timeout_ms")]
    #[schemars(range(min = 1_000, max = 600_000))]
    pub drain_timeout_ms: u64,
    /// The `minResidentMs` of models that do not set their own (0 to 86400000, default
    /// 30000).
    #[serde(default = "default_min_resident_ms")]
    #[schemars(range(max = 86_400_000))]
    pub min_resident_ms: u64,
    /// The `idleUnloadMs` of models that do not set their own (1000 to 604800000; default
    /// none: idle models stay loaded until another needs the room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_000, max = 604_800_000))]
    pub idle_unload_ms: Option<u64>,
    /// Where measured footprints and the children's pid files are kept (relative paths are
    /// resolved against the config's directory; default `.ray/lifecycle`).
    #[serde(default = "default_state_dir")]
    #[schemars(length(min = 1, max = 4_096))]
    pub state_dir: String,
}

/// The default `lifecycle.reserveMiB`.
pub const DEFAULT_RESERVE_MIB: u64 = 768;
/// The default `lifecycle.drainTimeoutMs`.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// The default `lifecycle.minResidentMs`.
pub const DEFAULT_MIN_RESIDENT_MS: u64 = 30_000;

fn default_reserve_mib() -> u64 {
    DEFAULT_RESERVE_MIB
}

fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

fn default_min_resident_ms() -> u64 {
    DEFAULT_MIN_RESIDENT_MS
}

fn default_state_dir() -> String {
    ".ray/lifecycle".into()
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            memory_budget_mib: None,
            reserve_mib: DEFAULT_RESERVE_MIB,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            min_resident_ms: DEFAULT_MIN_RESIDENT_MS,
            idle_unload_ms: None,
            state_dir: default_state_dir(),
        }
    }
}

impl LifecycleConfig {
    /// The `minResidentMs` of `model`: its own, else this section's.
    pub fn min_resident_ms(&self, model: &ModelConfig) -> u64 {
        model.min_resident_ms.unwrap_or(self.min_resident_ms)
    }

    /// The `idleUnloadMs` of `model`: its own, else this section's.
    pub fn idle_unload_ms(&self, model: &ModelConfig) -> Option<u64> {
        model.idle_unload_ms.or(self.idle_unload_ms)
    }
}

impl ModelConfig {
    /// Whether the model is managed: a llama.cpp launch profile with `supervise: true`.
    pub fn is_managed(&self) -> bool {
        self.adapter.launch_profile().is_some_and(|l| l.supervise)
    }
}

fn range(out: &mut Vec<Diagnostic>, path: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        out.push(Diagnostic::error(
            path,
            format!("must be {min} to {max}, got {value}"),
        ));
    }
}

/// The rules of the `lifecycle` section and of each model's lifecycle fields.
pub(crate) fn validate_lifecycle(config: &RayConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let models: Vec<(String, &ModelConfig)> = if config.models.is_empty() {
        vec![("model".to_string(), &config.model)]
    } else {
        config
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("models[{i}]"), m))
            .collect()
    };
    for (path, model) in &models {
        if let Some(ms) = model.min_resident_ms {
            range(
                &mut out,
                &format!("{path}.minResidentMs"),
                ms,
                0,
                86_400_000,
            );
        }
        if let Some(ms) = model.idle_unload_ms {
            range(
                &mut out,
                &format!("{path}.idleUnloadMs"),
                ms,
                1_000,
                604_800_000,
            );
        }
        let uses_lifecycle =
            model.resident || model.min_resident_ms.is_some() || model.idle_unload_ms.is_some();
        if uses_lifecycle && config.lifecycle.is_none() {
            out.push(Diagnostic::warning(
                path.as_str(),
                "sets resident, minResidentMs or idleUnloadMs, which apply only with a \
                 lifecycle section: without one, supervised models run all the time",
            ));
        } else if uses_lifecycle && !model.is_managed() {
            out.push(Diagnostic::warning(
                path.as_str(),
                "sets resident, minResidentMs or idleUnloadMs but is not a managed model (a \
                 llama.cpp launchProfile with supervise: true): Ray does not start its backend, \
                 so these have no effect",
            ));
        }
    }
    let Some(lifecycle) = &config.lifecycle else {
        return out;
    };
    if let Some(budget) = lifecycle.memory_budget_mib {
        range(&mut out, "lifecycle.memoryBudgetMiB", budget, 64, 1_048_576);
    }
    range(
        &mut out,
        "lifecycle.reserveMiB",
        lifecycle.reserve_mib,
        0,
        65_536,
    );
    range(
        &mut out,
        "lifecycle.drainTimeoutMs",
        lifecycle.drain_timeout_ms,
        1_000,
        600_000,
    );
    range(
        &mut out,
        "lifecycle.minResidentMs",
        lifecycle.min_resident_ms,
        0,
        86_400_000,
    );
    if let Some(ms) = lifecycle.idle_unload_ms {
        range(&mut out, "lifecycle.idleUnloadMs", ms, 1_000, 604_800_000);
    }
    let dir = &lifecycle.state_dir;
    if dir.trim().is_empty() || dir.chars().count() > 4_096 || dir.chars().any(char::is_control) {
        out.push(Diagnostic::error(
            "lifecycle.stateDir",
            "must be a path of 1 to 4096 chars without control characters",
        ));
    }
    if !models.iter().any(|(_, m)| m.is_managed()) {
        out.push(Diagnostic::warning(
            "lifecycle",
            "no model is managed (a llama.cpp launchProfile with supervise: true): the \
             lifecycle has nothing to load or unload",
        ));
    }
    // Two managed models on one port cannot both be loaded, even in turn safely.
    let mut ports: Vec<(u16, &str)> = Vec::new();
    for (path, model) in &models {
        if let Some(launch) = model.adapter.launch_profile().filter(|l| l.supervise) {
            if let Some((_, other)) = ports.iter().find(|(p, _)| *p == launch.port) {
                out.push(Diagnostic::error(
                    format!("{path}.adapter.launchProfile.port"),
                    format!(
                        "port {} is also the port of {other}: each managed model needs its own",
                        launch.port
                    ),
                ));
            } else {
                ports.push((launch.port, path.as_str()));
            }
        }
    }
    out
}
