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
