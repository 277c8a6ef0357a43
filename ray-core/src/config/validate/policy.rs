//! The rules of the `policy` section.

use super::{Diagnostic, ParsedUrl, is_loopback_host};
use crate::config::policy::*;
use crate::config::types::RayConfig;
use std::path::Path;

/// Clamps `config` to `policy`: warnings for each value cut, errors for what cannot be.
/// `source` names the policy file in the messages.
pub(crate) fn apply_policy(
    config: &mut RayConfig,
    policy: &HostPolicy,
    source: &str,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut cut = |path: String, message: String| {
        let mut d = Diagnostic::warning(path, message);
        d.source = Some(format!("policy {source}"));
        out.push(d);
    };
    if let Some(max) = policy.max_concurrency {
        if config.scheduler.concurrency > max {
            cut(
                "scheduler.concurrency".into(),
                format!(
                    "cut from {} to {max}: the host policy allows at most {max} permits",
                    config.scheduler.concurrency
                ),
            );
            config.scheduler.concurrency = max;
        }
        for (i, model) in config.models.iter_mut().enumerate() {
            if let Some(limits) = &mut model.scheduler
                && let Some(concurrency) = limits.concurrency
                && concurrency > max
            {
                cut(
                    format!("models[{i}].scheduler.concurrency"),
                    format!(
                        "cut from {concurrency} to {max}: the host policy allows at most {max} permits"
                    ),
                );
                limits.concurrency = Some(max);
            }
        }
    }
    if policy.allow_public_bind == Some(false) && !is_loopback_host(&config.server.host) {
        cut(
            "server.host".into(),
            format!(
                "cut from {:?} to \"127.0.0.1\": the host policy allows no public bind (put Caddy \
                 in front)",
                config.server.host
            ),
        );
        config.server.host = "127.0.0.1".into();
    }
    if let Some(max) = policy.max_memory_mib {
        let mut entries: Vec<(String, &mut crate::config::types::ModelConfig)> =
            vec![("model".into(), &mut config.model)];
        entries.extend(
            config
                .models
                .iter_mut()
                .enumerate()
                .map(|(i, m)| (format!("models[{i}]"), m)),
        );
        for (prefix, model) in entries {
            if let Some(operational) = &mut model.operational
                && let Some(asked) = operational.memory_class_mib
                && asked > max
            {
                cut(
                    format!("{prefix}.operational.memoryClassMiB"),
                    format!(
                        "cut from {asked} to {max}: the host policy allows Ray and its models \
                         {max} MiB"
                    ),
                );
                operational.memory_class_mib = Some(max);
            }
        }
    }
    let mut errors = Vec::new();
    let mut error = |path: String, message: String| {
        let mut d = Diagnostic::error(path, message);
        d.source = Some(format!("policy {source}"));
        errors.push(d);
    };
    // The models' budget: what the policy allows Ray and its models, less the gateway's and
    // the OS's reserve. A budget left to its default is cut where it is computed (the runtime's
    // `lifecycle::memory_budget`, which reads `config.policy`).
    if let (Some(max), Some(lifecycle)) = (policy.max_memory_mib, &mut config.lifecycle) {
        let cap = u64::from(max).saturating_sub(lifecycle.reserve_mib);
        if cap < crate::config::lifecycle::MIN_MEMORY_BUDGET_MIB {
            error(
                "lifecycle.reserveMiB".into(),
                format!(
                    "the host policy allows Ray and its models {max} MiB; less the {} MiB of \
                     lifecycle.reserveMiB that leaves {cap} MiB for the models, under the {} MiB \
                     a budget needs: lower reserveMiB or ask for a larger maxMemoryMiB",
                    lifecycle.reserve_mib,
                    crate::config::lifecycle::MIN_MEMORY_BUDGET_MIB
                ),
            );
        } else if let Some(asked) = lifecycle.memory_budget_mib
            && asked > cap
        {
            cut(
                "lifecycle.memoryBudgetMiB".into(),
                format!(
                    "cut from {asked} to {cap}: the host policy allows Ray and its models {max} \
                     MiB, less lifecycle.reserveMiB ({} MiB) for the gateway and the OS",
                    lifecycle.reserve_mib
                ),
            );
            lifecycle.memory_budget_mib = Some(cap);
        }
    }
    if let Some(dirs) = &policy.model_dirs {
        let entries: Vec<(String, &crate::config::types::ModelConfig)> = if config.models.is_empty()
        {
            vec![("model".into(), &config.model)]
        } else {
            config
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("models[{i}]"), m))
                .collect()
        };
        for (prefix, model) in entries {
            let Some(launch) = model.adapter.launch_profile() else {
                continue;
            };
            let path = Path::new(&launch.model_path);
            let inside = dirs.iter().any(|dir| {
                let dir = Path::new(dir);
                path.is_absolute() && !launch.model_path.contains("/../") && path.starts_with(dir)
            });
            if !inside {
                error(
                    format!("{prefix}.adapter.launchProfile.modelPath"),
                    format!(
                        "{} is outside the folders the host policy allows models from: {}",
                        launch.model_path,
                        dirs.join(", ")
                    ),
                );
            }
        }
    }
    if policy.allowed_hosts.is_some() {
        for (i, hook) in config.hooks.iter().enumerate() {
            let Some(url) = &hook.url else {
                continue;
            };
            if let Ok(parsed) = ParsedUrl::parse(url)
                && !policy.allows_host(&parsed.host)
            {
                error(
                    format!("hooks[{i}].url"),
                    format!(
                        "the host {} is not among the host policy's allowedHosts",
                        parsed.host
                    ),
                );
            }
        }
    }
    config.policy = Some(policy.clone());
    out.extend(errors);
    out
}
