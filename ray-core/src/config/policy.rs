//! The host policy: a file the machine's owner controls (its path in `RAY_POLICY_FILE`, for
//! example `/etc/ray/policy.json`) that the gateway's config cannot exceed. The loader clamps
//! the effective config to it and says where it cut a value (a warning naming the field, the
//! value asked for and the policy's limit); what cannot be clamped (a model file outside the
//! allowed folders, a hook URL to a host the policy does not allow) is an error.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::RayConfig;
use super::validate::{Diagnostic, ParsedUrl, is_loopback_host};

/// The environment variable naming the policy file.
pub const POLICY_FILE_ENV: &str = "RAY_POLICY_FILE";
/// The largest policy file read.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// What the machine's owner allows the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPolicy {
    /// Memory Ray and its models may use, in MiB: `operational.memoryClassMiB` (the deploy
    /// memory budget the units are rendered with) is cut to it.
    #[serde(
        rename = "maxMemoryMiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_mib: Option<u32>,
    /// Folders models may be loaded from (a launch profile's `modelPath` must be below one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dirs: Option<Vec<String>>,
    /// Hosts job callbacks and URL hooks may reach (exact names or `*.suffix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether the gateway may listen on a non-loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_bind: Option<bool>,
    /// The most permits (`scheduler.concurrency`, and each model's) the gateway may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

impl HostPolicy {
    /// Reads and parses a policy file; the error names the file and what is wrong.
    pub fn read(path: &Path) -> Result<HostPolicy, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "{}: the policy file is larger than {MAX_POLICY_BYTES} bytes",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `host` is one of `allowedHosts` (exact, case-insensitive, or `*.suffix`); true
    /// when the policy lists no hosts.
    pub fn allows_host(&self, host: &str) -> bool {
        let Some(hosts) = &self.allowed_hosts else {
            return true;
        };
        let host = host.to_ascii_lowercase();
        hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == pattern,
            }
        })
    }
}

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
        let mut entries: Vec<(String, &mut super::types::ModelConfig)> =
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
        let entries: Vec<(String, &super::types::ModelConfig)> = if config.models.is_empty() {
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
