//! The optional `hooks` array: commands to run, or URLs to post to, when something an operator
//! should know about happens (a backend went down, memory went critical, a job failed for good).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every event type a hook can ask for, with what it means.
pub const HOOK_EVENTS: &[(&str, &str)] = &[
    (
        "model_state_changed",
        "A model's state changed (ready, loading, degraded, unavailable, cooldown, ...).",
    ),
    (
        "model_lifecycle_changed",
        "A managed model's lifecycle state changed (unloaded, loading, ready, draining, \
         unloading, failed), with the reason: loaded on demand, evicted to make room, idle, \
         its process died.",
    ),
    ("backend_down", "A model's backend stopped answering."),
    ("backend_recovered", "A model's backend answers again."),
    (
        "degradation_changed",
        "The degradation level changed (none, queue, memory, cpu pressure).",
    ),
    (
        "memory_critical_started",
        "Memory pressure became critical: new work is refused.",
    ),
    (
        "memory_critical_ended",
        "Memory pressure is no longer critical.",
    ),
    (
        "job_failed",
        "A job failed for good (no attempt left, or an error that is not retried).",
    ),
    (
        "callback_gave_up",
        "Every delivery attempt of a job's callback failed.",
    ),
    (
        "cluster_node_joined",
        "A node appeared in the cluster registry.",
    ),
    ("cluster_node_left", "A node left the cluster registry."),
    ("config_reloaded", "The configuration was read again."),
    (
        "hooks_dropped",
        "Events were dropped because the hook queue was full (sent once the queue has room).",
    ),
];

/// One hook: which events, and what runs for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookConfig {
    /// The event types this hook receives (see `docs/operations.md`); absent or empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// A command to run for each event, as an argument vector (no shell); the event is its
    /// standard input, one JSON object. The program is an absolute path; at most 64
    /// arguments, each at most 4096 chars (not bytes) and without NUL. Set `command` or
    /// `url`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A URL the event is posted to as JSON, signed like job callbacks and under the same
    /// address rules (`asyncQueue.callbackAllowedHosts`, `callbackAllowPrivateNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long one run (or one delivery attempt) may take, 100 to 60000 ms (default 5000).
    #[serde(default = "default_hook_timeout_ms")]
    #[schemars(range(min = 100, max = 60_000))]
    pub timeout_ms: u64,
}

/// The default `hooks[].timeoutMs`.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 5_000;
/// The most hooks a config may have.
pub const MAX_HOOKS: usize = 16;
/// The most arguments of a hook's `command`, the program included.
pub const MAX_HOOK_ARGS: usize = 64;
/// The most chars (Unicode scalar values, not bytes) of one argument of a hook's `command`.
pub const MAX_HOOK_ARG_CHARS: usize = 4_096;

fn default_hook_timeout_ms() -> u64 {
    DEFAULT_HOOK_TIMEOUT_MS
}
