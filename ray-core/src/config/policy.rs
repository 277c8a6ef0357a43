//! The host policy: a file the machine's owner controls (its path in `RAY_POLICY_FILE`, or in
//! the config's `policyFile` when that variable is unset; for example `/etc/ray/policy.json`)
//! that the gateway's config cannot exceed. The loader clamps
//! the effective config to it and says where it cut a value (a warning naming the field, the
//! value asked for and the policy's limit); what cannot be clamped (a model file outside the
//! allowed folders, a hook URL to a host the policy does not allow) is an error.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The environment variable naming the policy file.
pub const POLICY_FILE_ENV: &str = "RAY_POLICY_FILE";
/// The largest policy file read.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// What the machine's owner allows the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPolicy {
    /// Memory Ray and its models may use, in MiB: `operational.memoryClassMiB` (the deploy
    /// memory budget the units are rendered with) is cut to it, and the managed models' budget
    /// (`lifecycle.memoryBudgetMiB`, or its default) to it less `lifecycle.reserveMiB`.
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
