//! The rules of the `lifecycle` section.

use super::Diagnostic;
use crate::config::types::{ModelConfig, RayConfig};

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
        // Port 0: Ray picks a free port at each load, which only the lifecycle's driver does.
        if model.adapter.launch_profile().is_some_and(|l| l.port == 0)
            && !(model.is_managed() && config.lifecycle.is_some())
        {
            out.push(Diagnostic::error(
                format!("{path}.adapter.launchProfile.port"),
                "is 0 (Ray picks a free port at each load), which needs supervise: true and a \
                 lifecycle section; set a port from 1 to 65535, or make the model managed",
            ));
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
        range(
            &mut out,
            "lifecycle.memoryBudgetMiB",
            budget,
            crate::config::lifecycle::MIN_MEMORY_BUDGET_MIB,
            1_048_576,
        );
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
    range(
        &mut out,
        "lifecycle.swapBatchRequests",
        u64::from(lifecycle.swap_batch_requests),
        1,
        10_000,
    );
    range(
        &mut out,
        "lifecycle.swapBatchMs",
        lifecycle.swap_batch_ms,
        0,
        600_000,
    );
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
