//! The optional `lifecycle` section, and the lifecycle fields of each model (`resident`,
//! `minResidentMs`, `idleUnloadMs`): managed models (a llama.cpp launch profile with
//! `supervise: true`) loaded on demand within a memory budget, unloaded when idle or to make
//! room. Without the section, supervised models run all the time, as before.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Loading managed models on demand within a memory budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Memory the managed models may use together, in MiB (64 to 1048576). Default: the
    /// gateway's cgroup memory limit, else the machine's memory, less `reserveMiB`. Never more
    /// than the host policy's `maxMemoryMiB` less `reserveMiB`.
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
    /// Fair swapping: when requests wait for a model that cannot load beside a busy one, the
    /// busy model still takes up to this many new requests (1 to 10000, default 16) before it
    /// drains and yields its memory, so a swap serves a batch rather than one request.
    #[serde(default = "default_swap_batch_requests")]
    #[schemars(range(min = 1, max = 10_000))]
    pub swap_batch_requests: u32,
    /// Fair swapping: the longest a busy model keeps taking new requests once another model's
    /// requests wait for its memory, in ms (0 to 600000, default 5000; 0: it drains at once).
    /// With `drainTimeoutMs` and the other model's load time it bounds how long a request
    /// waits for its model's turn.
    #[serde(default = "default_swap_batch_ms")]
    #[schemars(range(max = 600_000))]
    pub swap_batch_ms: u64,
    /// Where measured footprints and the children's pid files are kept (relative paths are
    /// resolved against the config's directory; default `.ray/lifecycle`).
    #[serde(default = "default_state_dir")]
    #[schemars(length(min = 1, max = 4_096))]
    pub state_dir: String,
}

/// The smallest `lifecycle.memoryBudgetMiB`.
pub const MIN_MEMORY_BUDGET_MIB: u64 = 64;
/// The default `lifecycle.reserveMiB`.
pub const DEFAULT_RESERVE_MIB: u64 = 768;
/// The default `lifecycle.drainTimeoutMs`.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// The default `lifecycle.swapBatchRequests`.
pub const DEFAULT_SWAP_BATCH_REQUESTS: u32 = 16;
/// The default `lifecycle.swapBatchMs`.
pub const DEFAULT_SWAP_BATCH_MS: u64 = 5_000;
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

fn default_swap_batch_requests() -> u32 {
    DEFAULT_SWAP_BATCH_REQUESTS
}

fn default_swap_batch_ms() -> u64 {
    DEFAULT_SWAP_BATCH_MS
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
            swap_batch_requests: DEFAULT_SWAP_BATCH_REQUESTS,
            swap_batch_ms: DEFAULT_SWAP_BATCH_MS,
            state_dir: default_state_dir(),
        }
    }
}
